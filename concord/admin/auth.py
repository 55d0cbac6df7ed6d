"""Admin authentication (SPEC §2.8): `Authorization: Bearer <admin_key>`, compared in constant time.

With no admin key configured the whole admin API answers 404, so an unconfigured gateway does not
even reveal that the API exists.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def _error(status: int, message: str, code: str) -> Response:
    kind = "not_found_error" if status == 404 else "authentication_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status)


def admin_denied(request: Request, admin_key: str) -> Response | None:
    """None when the request carries `admin_key`; otherwise the 404 or 401 response to send."""
    if not admin_key:
        return _error(404, "Not Found", "not_found")
    supplied = request.headers.get("authorization", "")
    scheme, _, token = supplied.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), admin_key.encode()
    ):
        return _error(401, "A valid admin key is required", "invalid_admin_key")
    return None
