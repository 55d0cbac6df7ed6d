"""Server-sent events on the wire: an incremental parser and an encoder (SPEC §3 streaming).

The parser follows the WHATWG `text/event-stream` rules that matter for LLM APIs: events end at a
blank line; `event:` names the event; several `data:` lines join with "\\n"; lines starting with
":" are comments (keep-alives); LF, CRLF and CR all end a line; and bytes may be split anywhere,
including inside a multi-byte character or between CR and LF.
"""

from __future__ import annotations

import codecs
from typing import Any

import orjson

from concord.providers.base import SSEEvent


class SSEParser:
    """Feed raw bytes as they arrive; get back every event completed so far."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF belongs to it
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return self._consume(self._decoder.decode(chunk))

    def finish(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line still counts (lenient)."""
        events = self._consume(self._decoder.decode(b"", final=True))
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = ""
        self._dispatch(events)
        return events

    def _consume(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buffer = self._buffer + text
        start = 0
        length = len(buffer)
        while True:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                self._line(buffer[start:lf], events)
                start = lf + 1
                continue
            self._line(buffer[start:cr], events)
            if cr + 1 < length:
                start = cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            else:
                start = cr + 1
                self._skip_lf = True
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or None
        # `id:` and `retry:` carry nothing the gateway uses.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(data="\n".join(self._data), event=self._event))
        self._data = []
        self._event = None


def encode_event(event: SSEEvent) -> bytes:
    """One event as bytes, ending with the blank line; multi-line data becomes several lines."""
    head = f"event: {event.event}\n" if event.event else ""
    body = "".join(f"data: {line}\n" for line in event.data.split("\n"))
    return (head + body + "\n").encode()


def is_error_event(event: SSEEvent) -> bool:
    """Whether an upstream event reports an error: Anthropic's `event: error` (or a
    `{"type": "error"}` payload), OpenAI's `data: {"error": {...}}`.

    Cheap enough for every event of a stream: only an event that names `error` or carries the
    `"error"` key is parsed."""
    if event.event == "error":
        return True
    if '"error"' not in event.data:
        return False
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and (
        payload.get("type") == "error" or bool(payload.get("error"))
    )


# The HTTP status an error event inside a stream stands for, by its error `type` (or `code`):
# Anthropic's types, then OpenAI's. Read by the adapters (a 200 stream that opens with an error)
# and by the stream translation (so an Anthropic client reads a rate limit as one).
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 529,
    "overloaded": 529,
}


def stream_error_status(body: Any) -> int | None:
    """The status an SSE event's data stands for when it is an error event, else None.

    Anthropic: `{"type": "error", "error": {"type": "overloaded_error", ...}}`; OpenAI:
    `{"error": {"message": ..., "type": "server_error", ...}}`. Unknown kinds count as 502."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if body.get("type") != "error" and not error:
        return None
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and 400 <= code <= 599:  # vLLM and others put the status here
            return code
        for name in (error.get("type"), code):
            status = STREAM_ERROR_STATUS.get(name) if isinstance(name, str) else None
            if status is not None:
                return status
    return 502
