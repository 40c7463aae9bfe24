"""One exception tree. Each class knows its HTTP status and OpenAI error type; the HTTP edge
renders them (OpenAI shape, or Anthropic shape on /v1/messages) and the CLI prints them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from costwarden.core.decision import RateInfo


class CostwardenError(Exception):
    """Base of every error costwarden raises on purpose.

    It carries data only; the HTTP edge (``http.errors``) turns it into a response with headers.
    """

    status = 500
    type = "api_error"
    code: str | None = "internal_error"
    should_retry: bool | None = None  # said to SDKs as x-should-retry when not None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after = retry_after  # seconds until a retry can succeed
        self.headers = headers or {}  # protocol headers the answer needs (e.g. allow)
        # set by the gateway service for a call it refused, so that the answer names it
        self.request_id: str | None = None
        self.department: str | None = None
        self.rate: RateInfo | None = None  # the caller's rate limits, for x-ratelimit-* headers
        self.budget_scope: str | None = None  # the scope of the budget that refused the call (dept:HR, tag:...)


class InvalidRequest(CostwardenError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class DepartmentRequired(InvalidRequest):
    code = "department_required"


class UnknownDepartment(InvalidRequest):
    code = "unknown_department"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotFound(InvalidRequest):
    status, code = 404, "model_not_found"


class RequestTooLarge(InvalidRequest):
    status, code = 413, "request_too_large"


class AuthenticationFailed(CostwardenError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PermissionDenied(CostwardenError):
    status, type, code = 403, "permission_error", "permission_denied"


class DepartmentMismatch(PermissionDenied):
    code = "department_mismatch"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class RateLimited(CostwardenError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class RateLimitNeverFits(RateLimited):
    """A call that alone needs more than a rate limit allows: no wait makes room for it."""

    should_retry = False


class BudgetExceeded(CostwardenError):
    status, type, code = 429, "insufficient_quota", "budget_exceeded"
    should_retry = False  # retrying cannot help before the budget's period ends


class UpstreamError(CostwardenError):
    status, type, code = 502, "api_error", "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504


class PolicyError(CostwardenError):
    """A policy file that cannot be loaded; ``problems`` lists every error with path and line."""

    status, type, code = 400, "invalid_request_error", "invalid_policy"

    def __init__(self, problems: list[str], source: str = "policy") -> None:
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class StorageError(CostwardenError):
    """A counter store or ledger backend failed; wraps the backend's own exception."""

    status, type, code = 503, "api_error", "storage_unavailable"
    should_retry = True


class ConfigurationError(CostwardenError):
    """A setting a command cannot run with (a bad policy, URL or SMTP setting); the CLI prints its
    message as one line and exits non-zero."""

    code = "configuration_error"


class CapacityExceeded(RateLimited):
    """An upstream's declared capacity (``tpm``) could not serve the call within its queue time."""

    code = "capacity_exceeded"
