"""Which counters a call is checked against: its scopes, their budgets and their rate limits.

``plan_for`` builds the plan of one call. ``Planner`` gives the same plans on the hot path: it
keeps each caller's plan until one of its windows moves and shares calendar windows (whose
computation, in the policy's timezone, is the costly part) between callers and rebuilds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING

from costwarden.core.kinds import ScopeKind, Unit
from costwarden.core.periods import Period, Window
from costwarden.core.policy import RESTRICT, Budget, Policy, Rules, TagRules
from costwarden.core.sliding import leaves_at

if TYPE_CHECKING:
    from costwarden.core.catalog import ModelSpec
    from costwarden.core.decision import Hold

RATE_PERIOD = Period(text="1m", kind="rolling", seconds=60)
PLAN_CACHE_SIZE = 100_000  # callers whose plans a Planner keeps (cleared wholesale when full)
# what names a caller's plan: department, team, key, user, customer and the tags that have rules
_PlanKey = tuple[str, str | None, str | None, str | None, str | None, tuple[tuple[str, str], ...]]


# Not frozen: every call makes one, and a frozen dataclass sets each field through
# object.__setattr__ (six calls here; see core/events.py). Never changed once made; hashed by its
# fields as a frozen one is (unsafe_hash), so that it can still key a dict.
@dataclass(slots=True, unsafe_hash=True)
class Caller:
    """Who a call is attributed to."""

    department: str
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    customer: str | None = None  # a business customer of the department (SPEC §12), from the key
    tags: tuple[tuple[str, str], ...] = ()  # the call's (name, value) tags, from X-Tags


@dataclass(frozen=True, slots=True)
class Scope:
    """One accountable scope: ``id`` is stable (counter keys), ``label`` is for people."""

    id: str
    kind: ScopeKind
    label: str
    department: str | None
    rules: Rules


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    scope: Scope
    index: int
    budget: Budget
    window: Window

    @property
    def flag_key(self) -> str:
        """The store flag that marks a restrict_tiers budget as tripped for this period."""
        return f"restrict|{self.window.key}"


@dataclass(frozen=True, slots=True)
class LimitCheck:
    scope: Scope
    metric: str  # rpm | tpm
    limit: int
    enforce: bool
    window: Window


@dataclass(slots=True)
class Plan:
    """Every counter a call touches. ``windows`` orders budgets first, then limits.

    A plan holds until ``valid_until`` (epoch seconds): the first instant a calendar window ends
    or a rolling window moves to its next bucket, so callers may reuse it until then. The fields
    after ``valid_until`` are derived from the checks once, for the admission hot path.

    Not frozen, but never changed once made (its memos ``last_holds`` and ``usable`` aside): each
    caller's plan is made again every second its rate windows move, and a frozen dataclass sets
    each of its fields through ``object.__setattr__``, a C call, where this one stores them directly.
    """

    budgets: tuple[BudgetCheck, ...]
    limits: tuple[LimitCheck, ...]
    windows: tuple[Window, ...]
    flag_keys: tuple[str, ...]
    valid_until: float
    valid_from: float = 0.0  # when it was made: a clock that steps back before it needs a new plan
    # until when its budget checks hold (``valid_until`` is this or sooner: its rate windows move
    # each second), so that a plan made again for its rate windows alone may keep them
    budgets_until: float = field(default=0.0, repr=False, compare=False)
    # per budget: (limit, counted in tokens, limit the store re-checks or None for a soft budget)
    budget_terms: tuple[tuple[int, bool, int | None], ...] = field(init=False, repr=False, compare=False)
    # per limit: (limit, counts requests (rpm), limit the store re-checks or None in shadow mode)
    limit_terms: tuple[tuple[int, bool, int | None], ...] = field(init=False, repr=False, compare=False)
    # enforced restrict_tiers budgets, whose flags may narrow the tiers served
    restricting: tuple[BudgetCheck, ...] = field(init=False, repr=False, compare=False)
    # budgets with alert thresholds: (index, check, ((spend level, fraction), ...)); a level is the
    # least whole amount at or above limit * fraction, so integer spend crosses it exactly when
    # it crosses the fraction
    alerting: tuple[tuple[int, BudgetCheck, tuple[tuple[int, Decimal], ...]], ...] = field(
        init=False, repr=False, compare=False)
    # per window, the hold an admitted call puts on it: (window, limit the store re-checks or None,
    # unit); an admitted call's holds follow these one to one
    hold_terms: tuple[tuple[Window, int | None, Unit], ...] = field(init=False, repr=False, compare=False)
    # the dollar budgets, as (index, limit): the room left after a call is the least of theirs
    usd_budgets: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    # per limit: the instant its current bucket leaves the window, and the instant that bucket
    # started (what the rate headers of an admitted call say; fixed while the plan holds)
    limit_resets: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    # per limit, what an admitted call's rate headers are made of: (limit, counts requests (rpm),
    # enforced, index of its window in ``windows``, its ``limit_resets``)
    rate_terms: tuple[tuple[int, bool, bool, int, tuple[int, int]], ...] = field(
        init=False, repr=False, compare=False)
    # the holds of the last call admitted on this plan, as (dollars, tokens, holds): calls of one
    # size share them (core/decision.py's _admit; a memo, written as calls are admitted)
    last_holds: list[tuple[int, int, tuple[Hold, ...]]] = field(init=False, repr=False, compare=False)
    # by model id, the models its caller may use (core/decision.py's ``decide``), with the policy
    # that said so: a memo, kept from plan to plan of the same caller
    usable: dict[str, tuple[Policy, ModelSpec]] = field(init=False, repr=False, compare=False)
    # the amounts a call's holds move, one per hold, from its (dollars, tokens, requests): a
    # settlement's, picked in one call rather than tested hold by hold
    hold_amounts: Callable[[tuple[int, int, int]], tuple[int, ...]] = field(init=False, repr=False, compare=False)

    # what the fields above are derived from besides the checks (made with the caller's skeleton)
    shape: InitVar[_Shape | None] = None
    # the caller's plan this one replaces: when it has the same budget checks (``budgets`` is its
    # tuple), what derives from them alone is its own (so ``alerting`` keeps its identity)
    previous: InitVar[Plan | None] = None

    def __post_init__(self, shape: _Shape | None, previous: Plan | None) -> None:
        # Run each time a caller's rate windows move (each second): loops and zip() rather than
        # generator expressions, which cost a generator object and its frame each.
        if shape is None:
            shape = _shape([c.budget for c in self.budgets], [(c.limit, c.metric == "rpm", c.enforce) for c in self.limits])
        budgets = self.budgets
        self.budget_terms = shape.budget_terms
        self.limit_terms = shape.limit_terms
        if previous is not None and previous.budgets is budgets:
            self.restricting, self.alerting, self.usable = previous.restricting, previous.alerting, previous.usable
        else:
            self.usable = {}
            self.restricting = tuple([budgets[i] for i in shape.restricting]) if shape.restricting else ()
            self.alerting = tuple([(i, budgets[i], levels) for i, levels in shape.alerting]) if shape.alerting else ()
        if len(self.windows) != len(shape.hold_units):
            raise ValueError(f"a plan of {len(shape.hold_units)} checks has {len(self.windows)} windows")
        self.hold_terms = tuple(zip(self.windows, shape.hold_limits, shape.hold_units))  # noqa: B905 (checked)
        self.usd_budgets = shape.usd_budgets
        self.hold_amounts = shape.hold_amounts
        self.last_holds = [(-1, -1, ())]
        width = RATE_PERIOD.bucket_seconds
        resets = []
        rate_terms = []
        for check, (limit, rpm, enforced, index) in zip(self.limits, shape.rates, strict=True):
            bucket = check.window.bucket
            reset = leaves_at(bucket, check.window.span, width), bucket * width
            resets.append(reset)
            rate_terms.append((limit, rpm, enforced, index, reset))
        self.limit_resets = tuple(resets)
        self.rate_terms = tuple(rate_terms)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a plan derives from its budgets and limits alone, whatever their windows: worked out
    once per caller (with its skeleton), not each time its plan is rebuilt as a window moves."""

    budget_terms: tuple[tuple[int, bool, int | None], ...]  # as Plan's
    limit_terms: tuple[tuple[int, bool, int | None], ...]  # as Plan's
    restricting: tuple[int, ...]  # the indexes of Plan.restricting's budgets
    flagged: tuple[int, ...]  # the indexes of the restrict_tiers budgets (Plan.flag_keys)
    alerting: tuple[tuple[int, tuple[tuple[int, Decimal], ...]], ...]  # Plan.alerting less the checks
    hold_limits: tuple[int | None, ...]  # Plan.hold_terms less the windows: the limits re-checked
    hold_units: tuple[Unit, ...]  # and the units
    usd_budgets: tuple[tuple[int, int], ...]  # as Plan's
    rates: tuple[tuple[int, bool, bool, int], ...]  # Plan.rate_terms less the resets
    hold_amounts: Callable[[tuple[int, int, int]], tuple[int, ...]]  # as Plan's


def _shape(budgets: Sequence[Budget], limits: Sequence[tuple[int, bool, bool]]) -> _Shape:
    """The shape of a plan of ``budgets`` and of ``limits`` given as (limit, rpm, enforced)."""
    terms = tuple((b.limit, b.unit == "tokens", b.limit if b.is_hard else None) for b in budgets)
    limit_terms = tuple((limit, rpm, limit if enforced else None) for limit, rpm, enforced in limits)
    holds = [(hard, Unit.TOKENS if in_tokens else Unit.USD) for _, in_tokens, hard in terms]
    holds += [(enforced, Unit.REQUESTS if rpm else Unit.TOKENS) for _, rpm, enforced in limit_terms]
    return _Shape(
        terms, limit_terms,
        tuple(i for i, b in enumerate(budgets) if b.action.kind == RESTRICT and b.enforce),
        tuple(i for i, b in enumerate(budgets) if b.action.kind == RESTRICT),
        tuple((i, alert_levels(b)) for i, b in enumerate(budgets) if b.alert_at),
        tuple(hard for hard, _ in holds), tuple(unit for _, unit in holds),
        tuple((i, limit) for i, (limit, in_tokens, _) in enumerate(terms) if not in_tokens),
        tuple((limit, rpm, enforced, len(terms) + i) for i, (limit, rpm, enforced) in enumerate(limits)),
        _picker(tuple(_UNIT_RANKS[unit] for _, unit in holds)))


_UNIT_RANKS = {Unit.USD: 0, Unit.TOKENS: 1, Unit.REQUESTS: 2}  # the order of Plan.hold_amounts' argument


def _picker(ranks: tuple[int, ...]) -> Callable[[tuple[int, int, int]], tuple[int, ...]]:
    """A function of (dollars, tokens, requests) giving the items at ``ranks``, as a tuple."""
    if len(ranks) > 1:
        return itemgetter(*ranks)
    if ranks:
        rank = ranks[0]
        return lambda amounts: (amounts[rank],)  # itemgetter of one item answers the item itself
    return lambda amounts: ()


def alert_levels(budget: Budget) -> tuple[tuple[int, Decimal], ...]:
    """(ceil(limit * fraction), fraction) per alert threshold, computed exactly."""
    levels = []
    for fraction in budget.alert_at:
        numerator, denominator = fraction.as_integer_ratio()
        levels.append((-((-budget.limit * numerator) // denominator), fraction))
    return tuple(levels)


def scopes_of(policy: Policy, caller: Caller) -> tuple[Scope, ...]:
    """The scopes a call falls in, widest first: organization, department, team, key, user, customer,
    then one per tag of the call that the policy gives budgets or limits."""
    dept = policy.departments[caller.department]
    scopes = [Scope("org", ScopeKind.ORGANIZATION, "The organization", None, policy.organization),
              Scope(f"dept:{dept.id}", ScopeKind.DEPARTMENT, f"Department {dept.id}", dept.id, dept.rules)]
    if caller.team is not None and caller.team in dept.teams:
        team = dept.teams[caller.team]
        scopes.append(Scope(f"team:{dept.id}/{team.id}", ScopeKind.TEAM, f"Team {team.id} of {dept.id}", dept.id, team.rules))
    if caller.key_id is not None and dept.per_key:
        scopes.append(Scope(f"key:{dept.id}/{caller.key_id}", ScopeKind.KEY, f"Key {caller.key_id} of {dept.id}", dept.id, dept.per_key))
    if caller.user is not None and dept.per_user:
        scopes.append(Scope(f"user:{dept.id}/{caller.user}", ScopeKind.USER, f"User {caller.user} of {dept.id}", dept.id, dept.per_user))
    customer = policy.customers.get(caller.customer) if caller.customer is not None else None
    if customer is not None and customer.plan.rules:
        scopes.append(customer_scope(customer.id, customer.name, dept.id, customer.plan.rules))
    if caller.tags and policy.tags:
        scopes.extend(tag_scope(policy.tags[pair]) for pair in ruled_tags(policy, caller.tags))
    return tuple(scopes)


def customer_scope(customer_id: str, name: str, department: str, rules: Rules) -> Scope:
    """A customer's scope: its plan's budgets and limits on counters of its own."""
    return Scope(f"customer:{customer_id}", ScopeKind.CUSTOMER, f"Customer {name} ({customer_id})", department, rules)


def tag_scope(tag: TagRules) -> Scope:
    """A tag value's scope, ``tag:project=atlas``, labelled 'Project atlas' (no department: its
    calls come from any)."""
    return Scope(tag.scope_id, ScopeKind.TAG, f"{tag.name[:1].upper()}{tag.name[1:]} {tag.value}",
                 None, tag.rules)


def tag_scopes(policy: Policy) -> tuple[Scope, ...]:
    """The scope of every tag value the policy gives budgets or limits, in name and value order."""
    return tuple(tag_scope(policy.tags[pair]) for pair in sorted(policy.tags) if policy.tags[pair].rules)


def ruled_tag_names(policy: Policy) -> list[str]:
    """The tag names with a value the policy gives budgets or limits: the ledger's ``tag:<name>``
    groups that tag spend is read from."""
    return sorted({tag.name for tag in policy.tags.values() if tag.rules})


def ruled_tags(policy: Policy, tags: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Those of a call's tags that the policy gives budgets or limits, sorted: a call's tag scopes
    (and its plan) do not depend on the order of its X-Tags header or on its other tags."""
    found = [pair for pair in tags if pair in policy.tags and policy.tags[pair].rules]
    return tuple(sorted(found)) if len(found) > 1 else tuple(found)


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """What a caller's plan holds at every instant: its checks without their windows."""

    budgets: tuple[tuple[Scope, int, Budget, str], ...]  # scope, index, budget, counter key base
    limits: tuple[tuple[Scope, str, int, bool, str], ...]  # scope, metric, limit, enforce, key base
    shape: _Shape


def _skeleton(policy: Policy, caller: Caller) -> _Skeleton:
    budgets: list[tuple[Scope, int, Budget, str]] = []
    limits: list[tuple[Scope, str, int, bool, str]] = []
    for scope in scopes_of(policy, caller):
        for index, budget in enumerate(scope.rules.budgets):
            budgets.append((scope, index, budget, f"b|{scope.id}|{index}|{budget.period.text}|{budget.unit}"))
        rate = scope.rules.limits
        if rate is None:
            continue
        for metric, limit in (("rpm", rate.rpm), ("tpm", rate.tpm)):
            if limit is not None:
                limits.append((scope, metric, limit, rate.enforce, f"r|{scope.id}|{metric}"))
    shape = _shape([budget for _, _, budget, _ in budgets],
                   [(limit, metric == "rpm", enforce) for _, metric, limit, enforce, _ in limits])
    return _Skeleton(tuple(budgets), tuple(limits), shape)


def _plan(budgets: Sequence[BudgetCheck], limits: list[LimitCheck], now: datetime, shape: _Shape,
          previous: Plan | None = None) -> Plan:
    """The plan of these checks at ``now``, sharing what it can with ``previous``, the plan of the
    same caller that it replaces (its budget checks are the same while only rate windows moved;
    ``budgets`` is its very tuple when the Planner kept them without looking them up)."""
    windows = [c.window for c in budgets]
    for limit in limits:
        windows.append(limit.window)
    stamp = now.timestamp()
    if previous is not None and budgets is previous.budgets:
        checks, flags, budgets_until = previous.budgets, previous.flag_keys, previous.budgets_until
    elif previous is not None and _same(budgets, previous.budgets):
        checks, flags, budgets_until = previous.budgets, previous.flag_keys, _budgets_until(budgets, stamp)
    else:
        checks = tuple(budgets)
        flags = tuple(budgets[i].flag_key for i in shape.flagged) if shape.flagged else ()
        budgets_until = _budgets_until(budgets, stamp)
        previous = None
    return Plan(checks, tuple(limits), tuple(windows), flags, _valid_until(budgets_until, limits), stamp,
                budgets_until, shape, previous)


def _same(checks: Sequence[BudgetCheck], kept: tuple[BudgetCheck, ...]) -> bool:
    """Whether two plans' budget checks are the same objects (the Planner shares them)."""
    if len(checks) != len(kept):
        return False
    for check, other in zip(checks, kept):  # noqa: B905, SIM110 (lengths checked; a loop costs no generator)
        if check is not other:
            return False
    return True


def plan_for(policy: Policy, caller: Caller, now: datetime) -> Plan:
    """Build the counter plan of a call at ``now``."""
    skeleton = _skeleton(policy, caller)
    tz = policy.timezone
    budgets = [BudgetCheck(scope, index, budget, budget.period.window(base, now, tz))
               for scope, index, budget, base in skeleton.budgets]
    limits = [LimitCheck(scope, metric, limit, enforce, RATE_PERIOD.window(base, now, tz))
              for scope, metric, limit, enforce, base in skeleton.limits]
    return _plan(budgets, limits, now, skeleton.shape)


class Planner:
    """Plans for one policy, each kept from when it was made until one of its windows moves.

    A plan counts on the same counters as ``plan_for``'s at every instant it is used; a reused
    plan's rolling windows keep the ``start``/``end`` of when it was made, less than one bucket old.
    """

    def __init__(self, policy: Policy, max_callers: int = PLAN_CACHE_SIZE) -> None:
        self.policy = policy
        self._max_callers = max_callers
        # keyed by the caller's fields: hashing a tuple of strings is cheaper than a dataclass
        self._plans: dict[_PlanKey, Plan] = {}
        self._skeletons: dict[_PlanKey, _Skeleton] = {}
        # calendar budget checks by counter key base (which names the scope and the budget), shared
        # by every caller in that scope
        self._calendar: dict[str, BudgetCheck] = {}
        # rolling budget and rate limit checks by key base, shared likewise while their bucket is
        # current: every plan is rebuilt when its rate windows move on (each second), and the
        # callers of a department share its rate windows
        self._rolling: dict[str, BudgetCheck] = {}
        self._rates: dict[str, LimitCheck] = {}
        # per department: whether it has per-key and per-user rules (which name a caller's plan)
        self._templates: dict[str, tuple[bool, bool]] = {}

    def plan(self, caller: Caller, now: datetime, stamp: float) -> Plan:
        """The plan of ``caller`` at ``now`` (``stamp`` is ``now.timestamp()``)."""
        templates = self._templates.get(caller.department)
        if templates is None:
            dept = self.policy.departments[caller.department]
            templates = self._templates[caller.department] = (bool(dept.per_key), bool(dept.per_user))
        # Only the fields that select a scope name a plan: the users of a department without
        # per-user rules share one, and so do calls whose tags have no rules, so a stream of new
        # user ids or tag values cannot fill this cache.
        key = (caller.department, caller.team, caller.key_id if templates[0] else None,
               caller.user if templates[1] else None, caller.customer,
               ruled_tags(self.policy, caller.tags) if caller.tags and self.policy.tags else ())
        plan = self._plans.get(key)
        if plan is not None and plan.valid_from <= stamp < plan.valid_until:
            return plan
        if len(self._plans) >= self._max_callers:
            self._plans.clear()
            self._skeletons.clear()
            self._calendar.clear()
            self._rolling.clear()
            self._rates.clear()
        skeleton = self._skeletons.get(key)
        if skeleton is None:
            skeleton = self._skeletons[key] = _skeleton(self.policy, caller)
        # Budget checks hold longer than rate windows, which move each second: a plan made again
        # for those alone keeps its predecessor's budget checks without looking each one up.
        if plan is not None and plan.valid_from <= stamp < plan.budgets_until:
            budgets: Sequence[BudgetCheck] = plan.budgets
        else:
            budgets = self._budgets(skeleton, now, stamp)
        limits = []
        for scope, metric, limit, enforce, base in skeleton.limits:
            rate = self._rates.get(base)
            if rate is None or not _current(rate.window, now, stamp, RATE_PERIOD.bucket_seconds):
                rate = self._rates[base] = LimitCheck(scope, metric, limit, enforce,
                                                      RATE_PERIOD.window(base, now, self.policy.timezone))
            limits.append(rate)
        plan = self._plans[key] = _plan(budgets, limits, now, skeleton.shape, plan)
        return plan

    def _budgets(self, skeleton: _Skeleton, now: datetime, stamp: float) -> list[BudgetCheck]:
        """A caller's budget checks at ``now``, shared with every caller of the same scopes."""
        tz = self.policy.timezone
        budgets = []
        for scope, index, budget, base in skeleton.budgets:
            period = budget.period
            if not period.is_calendar:
                check = self._rolling.get(base)
                if check is None or not _current(check.window, now, stamp, period.bucket_seconds):
                    check = self._rolling[base] = BudgetCheck(scope, index, budget, period.window(base, now, tz))
                budgets.append(check)
                continue
            check = self._calendar.get(base)
            if check is None or not check.window.start <= now < check.window.end:
                check = self._calendar[base] = BudgetCheck(scope, index, budget, period.window(base, now, tz))
            budgets.append(check)
        return budgets


def _current(window: Window, now: datetime, stamp: float, width: int) -> bool:
    """Whether a rolling window made earlier may serve at ``now``: it is at ``now``'s bucket, and
    was made no later than ``now`` (so its bounds are at most one bucket old, as a kept plan's)."""
    return window.bucket == int(stamp) // width and window.end <= now


def _budgets_until(budgets: Sequence[BudgetCheck], now: float) -> float:
    """Until when budget checks made at ``now`` hold: the first calendar window's end or rolling
    window's next bucket, within the hour."""
    until = now + 3600.0
    for check in budgets:
        period = check.budget.period
        edge = check.window.end.timestamp() if period.is_calendar else (check.window.bucket + 1) * period.bucket_seconds
        if edge < until:
            until = edge
    return until


def _valid_until(budgets_until: float, limits: list[LimitCheck]) -> float:
    """Until when a plan holds: its budget checks' ``_budgets_until``, or its next rate bucket."""
    until = budgets_until
    width = RATE_PERIOD.bucket_seconds
    for limit in limits:
        edge = (limit.window.bucket + 1) * width
        if edge < until:
            until = edge
    return until
