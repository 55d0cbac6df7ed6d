"""Admin authentication (SPEC §2.8): `Authorization: Bearer <admin_key>`, compared in constant
time. With no admin key configured the admin API does not exist: every path answers 404, so an
unconfigured gateway does not even reveal that the API is there."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from concord.admin.errors import error_response


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def admin_verdict(request: Request, admin_key: str | None) -> int:
    """200 when the caller holds the admin key, 404 when none is configured, else 401."""
    if not admin_key:
        return 404
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(token.encode(), admin_key.encode()):
        return 401
    return 200


def admin_denied(request: Request, admin_key: str | None) -> Response | None:
    """None when the request carries `admin_key`; otherwise the 404 or 401 response to send."""
    verdict = admin_verdict(request, admin_key)
    if verdict == 404:
        return error_response(404, "Not Found", "not_found")
    if verdict == 401:
        return error_response(401, "A valid admin key is required.", "invalid_admin_key")
    return None
