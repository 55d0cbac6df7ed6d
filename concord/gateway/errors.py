"""Every error the gateway answers with, rendered in the client's wire format (SPEC §3).

Each error knows its HTTP status and renders itself as OpenAI
`{"error": {"message", "type", "param", "code"}}` or Anthropic
`{"type": "error", "error": {"type", "message"}}`, picked by the endpoint the client called.
Messages never contain a secret: upstream keys never reach this module.

    GatewayError                  500 api_error; the base a handler catches
    ├── InvalidRequest            400 invalid_request_error, names the bad field in `param`
    ├── Unauthenticated           401 invalid_api_key (SPEC §2.8)
    ├── PolicyRejected            a route's `reject` status and message (SPEC §2.4.2)
    ├── ModelNotFound             404 model_not_found (SPEC §2.4)
    ├── PayloadTooLarge           413 request_too_large (server.max_body)
    ├── RateLimited               429 rate_limit_exceeded, with Retry-After (SPEC §2.7)
    ├── BudgetExceeded            429 insufficient_quota / budget_exceeded (SPEC §2.6)
    ├── Overloaded                503 overloaded: no concurrency slot within queue_timeout
    │   └── StateUnreachable      503: limits or budgets needed, Redis down, state_failure closed
    ├── KeysUnavailable           503 database_unavailable: an unknown key, and no database to ask
    └── UpstreamFailed            502, or the upstream's own 4xx the client caused (SPEC §3)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import orjson

ClientWire = Literal["openai", "anthropic"]

_OPENAI_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_type_for(status: int) -> str:
    return _OPENAI_TYPE_BY_STATUS.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )


def anthropic_type_for(status: int) -> str:
    return _ANTHROPIC_TYPE_BY_STATUS.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )


class GatewayError(Exception):
    """An answer other than success. Subclasses fix the status, types and code."""

    status: int = 500
    code: str | None = None
    openai_type: str | None = None  # None: derived from the status
    anthropic_type: str | None = None
    # An OpenAI-format upstream's own error object, passed on to OpenAI clients as it came
    # (Azure's `innererror` and content-filter results, say); keys already scrubbed
    upstream_error: Mapping[str, object] | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param
        self.headers: Mapping[str, str] = headers or {}

    @property
    def kind(self) -> str:
        """What the usage log and metrics call it: the code, else the class's (an upstream's
        error passed through may carry no code of its own)."""
        return self.code or type(self).code or "error"

    def payload(self, wire: ClientWire) -> dict[str, object]:
        """The error body as the client's SDK expects it."""
        if wire == "anthropic":
            kind = self.anthropic_type or anthropic_type_for(self.status)
            return {"type": "error", "error": {"type": kind, "message": self.message}}
        kind = self.openai_type or openai_type_for(self.status)
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        if self.upstream_error is not None:
            error.update(self.upstream_error)
        return {"error": error}

    def render(self, wire: ClientWire) -> bytes:
        return orjson.dumps(self.payload(wire))

    def sse(self, wire: ClientWire) -> bytes:
        """The error as a stream event, for failures after the first byte (SPEC §2.5)."""
        data = self.render(wire)
        if wire == "anthropic":
            return b"event: error\ndata: " + data + b"\n\n"
        return b"data: " + data + b"\n\n"


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request_error"


class Unauthenticated(GatewayError):
    status = 401
    code = "invalid_api_key"


class PolicyRejected(GatewayError):
    code = "rejected_by_policy"


class ModelNotFound(GatewayError):
    status = 404
    code = "model_not_found"
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"

    @classmethod
    def named(cls, model: str) -> ModelNotFound:
        """OpenAI's words for a model the caller cannot use."""
        message = f"The model '{model}' does not exist or you do not have access to it."
        return cls(message, param="model")


class PayloadTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"
    openai_type = "rate_limit_error"


class BudgetExceeded(GatewayError):
    status = 429
    code = "budget_exceeded"
    openai_type = "insufficient_quota"

    @classmethod
    def named(cls, budget: str) -> BudgetExceeded:
        return cls(f"Budget '{budget}' is exhausted for this period.")


class Overloaded(GatewayError):
    status = 503
    code = "overloaded"
    anthropic_type = "overloaded_error"


class ShuttingDown(GatewayError):
    """503: the server stopped before the answer was done (its shutdown grace ran out). The
    client gets this in its own format, a stream as its last event, and may retry elsewhere."""

    status = 503
    code = "shutdown"
    anthropic_type = "overloaded_error"

    def __init__(self) -> None:
        super().__init__("The gateway is shutting down and could not finish this answer; retry.")


class KeysUnavailable(GatewayError):
    """503: the key is not declared in the config and the database that may know it cannot be
    asked right now. Saying 401 would tell the client its key is wrong, which it may not be."""

    status = 503
    code = "database_unavailable"
    anthropic_type = "api_error"


class UpstreamFailed(GatewayError):
    status = 502
    code = "upstream_error"
