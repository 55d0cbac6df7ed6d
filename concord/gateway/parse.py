"""Read, decode and check a request body; build the routing context (SPEC §2.4.1, §3).

Validation is the minimum that lets the gateway route and translate: the rest is the upstream's to
judge. Every rejection names the offending field in `param`, as OpenAI does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from concord.engine.graph import Endpoint, ParamOverrides, RequestContext
from concord.gateway.auth import Principal
from concord.gateway.errors import InvalidRequest, PayloadTooLarge
from concord.gateway.tokens import estimate

JSON = dict[str, Any]


def request_headers(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict: lower-case name to its first value.

    Looked up several times per request (auth, request id, `header.*` routing, cache directives);
    Starlette's `Headers` scans the raw list on every lookup and raises on every miss.
    """
    headers: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


async def read_body(request: Request, max_body: int, headers: Mapping[str, str]) -> bytes:
    """The raw body, refusing more than `max_body` bytes before reading them if we can (413)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and max_body and int(declared) > max_body:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {max_body} bytes.")
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # read straight from ASGI, as `request.stream()` would
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if max_body and size > max_body:
                raise PayloadTooLarge(f"Request body exceeds the limit of {max_body} bytes.")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(raw: bytes) -> JSON:
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def validate(endpoint: Endpoint, body: JSON) -> None:
    """Raise InvalidRequest naming the first field that makes the request unservable."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(_missing_or("model", model, "a non-empty string"), param="model")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    if endpoint in ("chat", "messages"):
        _check_messages(body)
    if endpoint == "messages":
        max_tokens = body.get("max_tokens")
        if not _is_int(max_tokens):
            raise InvalidRequest(
                _missing_or("max_tokens", max_tokens, "an integer"), param="max_tokens"
            )
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise InvalidRequest("'system' must be a string or a list of blocks.", param="system")
    elif endpoint == "completions" and body.get("prompt") is None:
        raise InvalidRequest("'prompt' is a required property.", param="prompt")
    elif endpoint == "embeddings":
        value = body.get("input")
        if not isinstance(value, str | list) or not value:
            raise InvalidRequest(_missing_or("input", value, "a string or a list"), param="input")
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and not _is_int(body[name]):
            raise InvalidRequest(f"'{name}' must be an integer.", param=name)
    temperature = body.get("temperature")
    if temperature is not None and not _is_number(temperature):
        raise InvalidRequest("'temperature' must be a number.", param="temperature")


def _check_messages(body: JSON) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest(_missing_or("messages", messages, "a list"), param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"'messages[{index}]' must be an object with a string 'role'.",
                param=f"messages[{index}]",
            )


def _missing_or(name: str, value: Any, expected: str) -> str:
    if value is None:
        return f"'{name}' is a required property."
    return f"'{name}' must be {expected}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_context(
    endpoint: Endpoint, body: JSON, principal: Principal, headers: Mapping[str, str]
) -> RequestContext:
    """The routing view of a request (SPEC §2.4.1); `input_tokens` is the fast estimate."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    user = body.get("user") or metadata.get("user_id") or principal.user
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    temperature = body.get("temperature")
    return RequestContext(
        endpoint=endpoint,
        model=body["model"],
        workspace=principal.workspace,
        key=principal.key,
        user=user if isinstance(user, str) else None,
        tags=principal.tags,
        headers=headers,
        metadata=metadata,
        input_tokens=estimate(endpoint, body),
        max_tokens=max_tokens if _is_int(max_tokens) else None,
        temperature=float(temperature) if _is_number(temperature) else None,
        stream=body.get("stream") is True,
        tools=bool(body.get("tools") or body.get("functions")),
        images=_has_images(body.get("messages")),
        key_id=principal.key_id,
    )


def _has_images(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    return any(
        isinstance(message, dict) and _content_has_images(message.get("content"))
        for message in messages
    )


def _content_has_images(content: Any) -> bool:
    """Image parts or blocks, those inside Anthropic tool results too (a computer-use
    screenshot arrives as a tool's result)."""
    if not isinstance(content, list):
        return False
    for block in content:
        if isinstance(block, dict):
            kind = block.get("type")
            if kind in ("image_url", "image"):
                return True
            if kind == "tool_result" and _content_has_images(block.get("content")):
                return True
    return False


def apply_params(body: JSON, params: ParamOverrides) -> JSON:
    """Route `params` (SPEC §2.4.2): `set` forces values, `max` caps numbers.

    A cap on `max_tokens` also caps chat's `max_completion_tokens` (both name the output limit) and
    sets `max_tokens` when the request has no limit at all, so the cap cannot be sidestepped.
    """
    if not params.set and not params.max:
        return body
    out = dict(body)
    for name, value in params.set.items():
        if name != "model":
            out[name] = value
    for name, cap in params.max.items():
        names = [name]
        if name == "max_tokens" and "max_completion_tokens" in out:
            names = ["max_completion_tokens"] + (["max_tokens"] if "max_tokens" in out else [])
        for field_name in names:
            current = out.get(field_name)
            if not _is_number(current) and field_name != "max_tokens":
                continue  # only the output limit is worth setting when absent
            capped = cap if not _is_number(current) else min(current, cap)
            out[field_name] = int(capped) if float(capped).is_integer() else capped
    return out
