"""Admin API errors, rendered as `{"error": {"message", "type", "code"}}` (SPEC §3, §5)."""

from __future__ import annotations

from starlette.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    503: "api_error",
}


class AdminError(Exception):
    """An error answer; the message is shown to the caller, so it never holds a secret."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code)


def error_response(status: int, message: str, code: str) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
