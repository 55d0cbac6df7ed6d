"""Token usage in one shape, whatever the upstream's wire format (SPEC §2.6: spend from usage).

`Usage.input_tokens` is the whole prompt, cached reads included (OpenAI's `prompt_tokens`).
Anthropic reports fresh, cache-written and cache-read input separately; its total prompt is their
sum, and `cached_tokens` is the cache-read part only (the part billed at `price.cached_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from concord.providers.base import SSEEvent, Wire


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_openai(body: dict[str, Any] | None) -> Usage:
    """From a chat/completions/embeddings response, or from the `usage` object itself."""
    if not isinstance(body, dict):
        return Usage()
    usage = body.get("usage") if "usage" in body else body
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=cached,
    )


def usage_from_anthropic(body: dict[str, Any] | None) -> Usage:
    """From a Messages response, or from the `usage` object itself."""
    if not isinstance(body, dict):
        return Usage()
    usage = body.get("usage") if "usage" in body else body
    if not isinstance(usage, dict):
        return Usage()
    cached = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=_int(usage.get("input_tokens")) + written + cached,
        output_tokens=_int(usage.get("output_tokens")),
        cached_tokens=cached,
    )


def openai_usage_dict(usage: Usage) -> dict[str, Any]:
    """`usage` as OpenAI's chat completion reports it."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def anthropic_usage_dict(usage: Usage) -> dict[str, Any]:
    """`usage` as Anthropic's Messages API reports it: input excludes the cached reads."""
    return {
        "input_tokens": max(usage.input_tokens - usage.cached_tokens, 0),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }


class StreamUsageMeter:
    """Watches a stream passed through untouched and keeps the usage it reports."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.usage = Usage()
        self._anthropic_raw: dict[str, int] = {}

    def observe(self, event: SSEEvent) -> None:
        if event.data == "[DONE]" or '"usage"' not in event.data:
            return
        try:
            payload = orjson.loads(event.data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if self.wire == "openai":
            if isinstance(payload.get("usage"), dict):
                self.usage = usage_from_openai(payload["usage"])
            return
        self._observe_anthropic(payload)

    def _observe_anthropic(self, payload: dict[str, Any]) -> None:
        # message_start carries the input side; message_delta carries cumulative totals that
        # overwrite what came before (the SDKs accumulate the same way).
        if payload.get("type") == "message_start":
            usage = (payload.get("message") or {}).get("usage")
        elif payload.get("type") == "message_delta":
            usage = payload.get("usage")
        else:
            return
        if not isinstance(usage, dict):
            return
        for name, value in usage.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self._anthropic_raw[name] = value
        self.usage = usage_from_anthropic(self._anthropic_raw)
