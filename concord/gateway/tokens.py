"""Fast input-token estimate for routing and window checks (SPEC §2.4.1 `input_tokens`).

Exact counts come from `quicktok` (the `quicktok-v1` package: a native BPE tokenizer that ships
o200k_base and cl100k_base for offline use; ~40 µs per 4 KB of text) when it is installed and loads;
otherwise, or past `EXACT_LIMIT` characters (to keep the event loop responsive), a heuristic
calibrated on English prose against o200k_base: about 4.2 ASCII characters per token, one token per
non-ASCII character. Routing needs an estimate, not a bill: the bill comes from upstream usage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

EXACT_LIMIT = 400_000  # characters; beyond this the heuristic is used
IMAGE_TOKENS = 765  # a 1024x1024 image at high detail (OpenAI's accounting)
MESSAGE_OVERHEAD = 4  # role and separators per message
REPLY_PRIMER = 3

_counter: Callable[[str], int] | None = None
_loaded = False


def backend() -> str:
    """`quicktok` or `heuristic`: what `count_text` uses in this process."""
    return "quicktok" if _load() is not None else "heuristic"


def warm() -> None:
    """Load the tokenizer ahead of the first request (its tables take ~0.5 s to load)."""
    _load()


def _load() -> Callable[[str], int] | None:
    global _counter, _loaded
    if _loaded:
        return _counter
    _loaded = True
    try:
        import quicktok  # type: ignore[import-not-found]

        encoder = quicktok.get_encoding("o200k_base")
        encoder.encode("warm up")

        def count(text: str) -> int:
            return len(encoder.encode(text))

        _counter = count
    except Exception:  # absent, or its data failed to load: never fail a request for it
        _counter = None
    return _counter


def heuristic(text: str) -> int:
    """Calibrated estimate: ~4.2 ASCII characters per token, 1 per other character."""
    if text.isascii():
        return (len(text) * 10 + 41) // 42
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return (ascii_chars * 10 + 41) // 42 + (len(text) - ascii_chars)


def count_text(text: str) -> int:
    if not text:
        return 0
    counter = _counter if _loaded else _load()
    if counter is None or len(text) > EXACT_LIMIT:
        return heuristic(text)
    return counter(text)


def estimate(endpoint: str, body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a request body in any of the four client formats."""
    parts: list[str] = []
    extra = 0
    if endpoint == "embeddings":
        _collect_input(body.get("input"), parts)
    elif endpoint == "completions":
        _collect_input(body.get("prompt"), parts)
    else:
        messages = body.get("messages")
        if isinstance(messages, list):
            extra += REPLY_PRIMER + MESSAGE_OVERHEAD * len(messages)
            for message in messages:
                if isinstance(message, dict):
                    extra += _collect_content(message.get("content"), parts)
                    calls = message.get("tool_calls")
                    if calls:
                        parts.append(orjson.dumps(calls).decode())
        extra += _collect_content(body.get("system"), parts)
        tools = body.get("tools")
        if tools:
            parts.append(orjson.dumps(tools).decode())
    return count_text("\n".join(parts)) + extra


def estimate_answer(body: dict[str, Any]) -> int:
    """Estimated output tokens of a complete answer, OpenAI's (chat or completions) or
    Anthropic's: for an upstream that reports no usage, so that spend is not zero."""
    parts: list[str] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            _collect_content(message.get("content"), parts)
            if message.get("tool_calls"):
                parts.append(orjson.dumps(message["tool_calls"]).decode())
        elif isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    _collect_content(body.get("content"), parts)  # Anthropic: text blocks and tool inputs
    return count_text("\n".join(parts))


def _collect_input(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, int):
                parts.append("x")  # a token id
            elif isinstance(item, list):
                parts.append("x " * len(item))  # a list of token ids


def _collect_content(content: Any, parts: list[str]) -> int:
    """Append the text of a message content; return the tokens of its non-text parts."""
    if isinstance(content, str):
        parts.append(content)
        return 0
    if not isinstance(content, list):
        return 0
    extra = 0
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("image_url", "image", "input_image"):
            extra += IMAGE_TOKENS
        elif isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "tool_result":
            extra += _collect_content(block.get("content"), parts)
        elif kind == "tool_use":
            parts.append(orjson.dumps(block.get("input") or {}).decode())
    return extra
