"""Token usage in one shape, whatever the upstream's wire format (SPEC §2.6: spend from usage).

`Usage.input_tokens` is the whole prompt, cached reads included (OpenAI's `prompt_tokens`).
Anthropic reports fresh, cache-written and cache-read input separately; its total prompt is their
sum, and `cached_tokens` is the cache-read part only (the part billed at `price.cached_input`).

Two breakdowns ride along so translation keeps them, though spend never reads them:
`cache_write_tokens` (inside `input_tokens`; Anthropic's `cache_creation_input_tokens`, OpenAI's
`prompt_tokens_details.cache_write_tokens`) and `reasoning_tokens` (inside `output_tokens`;
OpenAI's `completion_tokens_details.reasoning_tokens`, Anthropic's
`output_tokens_details.thinking_tokens`). OpenAI-shaped usage names each only when it is not 0,
as OpenAI leaves them out; Anthropic-shaped usage always has `cache_creation_input_tokens`, as
Anthropic does.
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
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _detail(usage: dict[str, Any], details: str, name: str) -> int:
    """`usage[details][name]`, 0 when either is missing."""
    inner = usage.get(details)
    return _int(inner.get(name)) if isinstance(inner, dict) else 0


def usage_from_openai(body: dict[str, Any] | None) -> Usage:
    """From a chat/completions/embeddings response, or from the `usage` object itself."""
    if not isinstance(body, dict):
        return Usage()
    usage = body.get("usage") if "usage" in body else body
    if not isinstance(usage, dict):
        return Usage()
    prompt = usage.get("prompt_tokens_details")  # read once: this runs on every answer
    cached = written = 0
    if isinstance(prompt, dict):
        cached, written = _int(prompt.get("cached_tokens")), _int(prompt.get("cache_write_tokens"))
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
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
        cache_write_tokens=written,
        reasoning_tokens=_detail(usage, "output_tokens_details", "thinking_tokens"),
    )


def openai_usage_dict(usage: Usage) -> dict[str, Any]:
    """`usage` as OpenAI's chat completion reports it."""
    prompt: dict[str, Any] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt["cache_write_tokens"] = usage.cache_write_tokens
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt,
    }
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def anthropic_usage_dict(usage: Usage) -> dict[str, Any]:
    """`usage` as Anthropic's Messages API reports it: input excludes the cache reads and
    writes, which it counts apart."""
    fresh = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    out: dict[str, Any] = {
        "input_tokens": max(fresh, 0),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def merge_anthropic_usage(into: dict[str, Any], usage: Any) -> None:
    """Fold one stream event's `usage` into what the stream reported so far: message_delta
    carries cumulative totals, which overwrite (the SDKs accumulate the same way)."""
    if not isinstance(usage, dict):
        return
    for name, value in usage.items():
        if isinstance(value, dict) or (isinstance(value, int) and not isinstance(value, bool)):
            into[name] = value


class StreamUsageMeter:
    """Watches a stream passed through untouched and keeps the usage it reports."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.usage = Usage()
        self._anthropic_raw: dict[str, Any] = {}

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
        if isinstance(usage, dict):
            merge_anthropic_usage(self._anthropic_raw, usage)
            self.usage = usage_from_anthropic(self._anthropic_raw)
