"""Answers for requests no route takes: an unknown path or a method a path does not serve.

Errors are JSON in the client's wire format (SPEC §3), never the framework's plain text: an SDK
pointed at an endpoint Concord does not serve shows a readable error. Admin paths keep the admin
API's rule (SPEC §2.8): without an admin key configured, or without the caller holding it, a
wrong method on an admin path answers exactly as a path that does not exist, so the API's shape
is not revealed.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from concord.admin.auth import admin_denied
from concord.admin.errors import error_response
from concord.gateway.errors import ClientWire, GatewayError
from concord.gateway.respond import json_response

ADMIN_PREFIXES = ("/_admin/", "/_stats/")


class UnknownPath(GatewayError):
    status = 404
    code = "unknown_url"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"


def _wire(request: Request) -> ClientWire:
    if "anthropic-version" in request.headers or request.url.path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


def _answer(request: Request, error: GatewayError) -> Response:
    """The error as the gateway answers any `/v1/` request: with the config version (SPEC §3)."""
    headers = {**error.headers, "x-concord-config": request.app.state.gateway.graph.version}
    return json_response(error.render(_wire(request)), error.status, headers)


async def not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith(ADMIN_PREFIXES):
        return error_response(404, "Not Found", "not_found")  # as an admin path without a key
    return _answer(request, UnknownPath(f"Invalid URL ({request.method} {request.url.path})"))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    allowed = exc.headers.get("Allow", "") if isinstance(exc, HTTPException) and exc.headers else ""
    headers = {"allow": allowed} if allowed else {}
    if request.url.path.startswith(ADMIN_PREFIXES):
        denied = admin_denied(request, request.app.state.gateway.graph.auth.admin_key)
        if denied is not None:
            return denied
        response = error_response(
            405, f"{request.method} is not allowed here", "method_not_allowed"
        )
        response.headers.update(headers)
        return response
    message = f"{request.method} is not allowed on {request.url.path}"
    return _answer(
        request,
        MethodNotAllowed(message + (f": use {allowed}" if allowed else ""), headers=headers),
    )


EXCEPTION_HANDLERS = {404: not_found, 405: method_not_allowed}
