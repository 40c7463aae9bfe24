"""A library façade for applications that call LLM providers themselves.

    governor = Governor.from_policy_file("policy.yaml")
    async with governor.admit(department="MARKETING", model="gpt-4o", input_tokens=1200,
                              max_output_tokens=500) as call:
        reply = await my_client.chat(model=call.model, max_tokens=call.max_output_tokens, ...)
        await call.settle(input_tokens=..., output_tokens=..., cached_input_tokens=...)

A refused call raises the matching ``costwarden.errors`` exception (BudgetExceeded,
RateLimited, ModelNotAllowed...). Leaving the block with an exception releases the reservation;
leaving it without settling charges the estimate, so that no spend is ever lost.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from costwarden import errors
from costwarden.clock import utc_now
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.policy import Policy
from costwarden.core.scopes import Caller, Planner
from costwarden.counters import CounterStore, MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted, Settled


class GovernedCall:
    """An admitted call: the model to use, the output bound to send, and ``settle``."""

    def __init__(self, admission: Admission, admitted: Admitted) -> None:
        self._admission = admission
        self._admitted = admitted
        self.settled: Settled | None = None

    @property
    def id(self) -> str:
        return self._admitted.id

    @property
    def decision(self) -> Decision:
        return self._admitted.decision

    @property
    def model(self) -> str:
        """The model to call: the one requested, or its downgrade."""
        assert self.decision.model is not None
        return self.decision.model.id

    @property
    def max_output_tokens(self) -> int:
        """The output bound to send (clamped where a hard budget only has room for less)."""
        return self.decision.output_tokens

    async def settle(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Settled:
        """Charge what the provider reported; only the first call counts."""
        if self.settled is None:
            self.settled = await self._admission.settle(self._admitted, input_tokens, output_tokens,
                                                        cached_input_tokens)
        return self.settled


class Governor:
    """Admits calls against a policy's budgets, limits and tier rights."""

    def __init__(self, policy: Policy, store: CounterStore | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.admission = Admission(store or MemoryCounterStore(), clock)
        self.planner = Planner(policy)  # a policy and its counter plans

    @property
    def policy(self) -> Policy:
        return self.planner.policy

    @classmethod
    def from_policy_file(cls, path: str | Path, store: CounterStore | None = None) -> Governor:
        from costwarden.policy import load_policy

        return cls(load_policy(path), store)

    @asynccontextmanager
    async def admit(self, *, department: str, model: str, input_tokens: int, max_output_tokens: int | None = None,
                    team: str | None = None, key_id: str | None = None, user: str | None = None,
                    tags: Mapping[str, str] | None = None) -> AsyncIterator[GovernedCall]:
        """Admit a call or raise why not; see the module docstring. ``tags`` (``{"project":
        "atlas"}``) bring the call under the policy's tag budgets."""
        if department not in self.planner.policy.departments:
            raise errors.UnknownDepartment(f"Unknown department {department!r}.")
        request = CallRequest(Caller(department, team, key_id, user, tags=tuple((tags or {}).items())), model,
                              input_tokens, max_output_tokens)
        outcome = await self.admission.admit(uuid.uuid4().hex, request, self.planner)
        if isinstance(outcome, Decision):
            assert outcome.denial is not None
            raise outcome.denial.exception()
        call = GovernedCall(self.admission, outcome)
        try:
            yield call
        except BaseException:
            if call.settled is None:
                await self.admission.release(outcome)
            raise
        if call.settled is None:
            await call.settle(input_tokens, outcome.decision.output_tokens)
