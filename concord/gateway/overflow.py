"""Context overflow by reshaping the request (SPEC §2.5.1 `truncate` and `summarize`).

Both work on the upstream body (OpenAI chat or Anthropic messages: either keeps its turns in
`messages`; system prompts are never dropped). `truncate` drops the oldest turns until the
estimate is clearly below both the target's window and the refused request (which may fit the
window by our estimate); `summarize` asks the same target to condense the older turns into one
message, and the caller falls back to `truncate` when that fails or times out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from concord.gateway.bridge import Bridge
from concord.gateway.tokens import estimate
from concord.providers.base import Provider, UpstreamError, UpstreamRequest
from concord.translate.usage import Usage

JSON = dict[str, Any]
SHRINK = 0.75  # aim for three quarters of the refused size (window or estimate, the smaller)
KEEP_RECENT = 2  # turns `summarize` leaves verbatim
SUMMARY_TOKENS = 512
_SYSTEM_ROLES = ("system", "developer")
_PROMPT = (
    "Summarise the conversation below in a few sentences, keeping every fact, name, number and "
    "decision a reader needs to continue it. Reply with the summary only.\n\n"
)


def _kind(bridge: Bridge) -> str:
    return "messages" if bridge.upstream == "messages" else "chat"


def _budget(bridge: Bridge, body: JSON, window: int | None) -> int:
    """Aim clearly below what the upstream refused: the body may already fit the declared window
    by our estimate (the upstream counts otherwise), so trim below the smaller of the two."""
    refused = estimate(_kind(bridge), body)
    if window is not None:
        reply = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        refused = min(refused, max(window - (reply if isinstance(reply, int) else 0), 1))
    return int(refused * SHRINK)


def truncate(bridge: Bridge, body: JSON, window: int | None) -> JSON | None:
    """Drop the oldest non-system turns until the input is clearly smaller than the refused one
    (see `_budget`); None when nothing can go. The kept part opens with a plain user turn, the
    last one at the latest, so no reply or tool result is left without what came before it."""
    messages = body.get("messages")
    if bridge.upstream not in ("chat", "messages") or not isinstance(messages, list):
        return None
    budget = _budget(bridge, body, window)
    kept = list(messages)
    # turns from the last plain user turn on stay: the question and what answers to it
    last_open = next((i for i in reversed(range(len(kept))) if _plain_user(kept[i])), None)
    if last_open is None:
        return None
    dropped = False
    out = dict(body)
    while True:
        out["messages"] = kept
        if estimate(_kind(bridge), out) <= budget:
            break
        turns = [i for i, m in enumerate(kept) if m.get("role") not in _SYSTEM_ROLES]
        if turns[0] >= last_open:
            break
        del kept[turns[0]]
        last_open -= 1
        dropped = True
        # A conversation must open with a user turn: drop orphaned replies and tool results.
        while True:
            first = next(i for i, m in enumerate(kept) if m.get("role") not in _SYSTEM_ROLES)
            if first < last_open and not _plain_user(kept[first]):
                del kept[first]
                last_open -= 1
            else:
                break
    return out if dropped else None


def _plain_user(message: JSON) -> bool:
    """A user turn a conversation may open with: not a tool result (Anthropic carries those in
    user turns, and they need the call before them)."""
    return message.get("role") == "user" and not _is_tool_result(message)


def _is_tool_result(message: JSON) -> bool:
    """OpenAI's `tool` message, or an Anthropic user turn carrying `tool_result` blocks."""
    if message.get("role") == "tool":
        return True
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    )


async def summarize(
    provider: Provider, bridge: Bridge, body: JSON, window: int | None, timeout: float
) -> tuple[JSON, Usage] | None:
    """Condense the older turns with the same target: the smaller body and what the summary call
    used (the request pays for it: SPEC §2.6 spend from usage); None on failure or timeout."""
    messages = body.get("messages")
    if bridge.upstream not in ("chat", "messages") or not isinstance(messages, list):
        return None
    system = [m for m in messages if m.get("role") in _SYSTEM_ROLES]
    turns = [m for m in messages if m.get("role") not in _SYSTEM_ROLES]
    start = max(len(turns) - KEEP_RECENT, 0)
    # the kept part opens with the user's own turn, or (an agent loop ending in tool results)
    # with the call those results answer: a tool result never loses the call before it
    recent_start = next((i for i in range(start, len(turns)) if _plain_user(turns[i])), start)
    while recent_start > 0 and _is_tool_result(turns[recent_start]):
        recent_start -= 1
    older, recent = turns[:recent_start], turns[recent_start:]
    if not older or timeout <= 0:
        return None
    transcript = "\n".join(f"{m.get('role')}: {_text(m.get('content'))}" for m in older)
    request_body: JSON = {
        "model": body.get("model"),
        "messages": [{"role": "user", "content": _PROMPT + transcript}],
        "max_tokens": SUMMARY_TOKENS,
    }
    request = UpstreamRequest(endpoint=bridge.upstream, body=request_body, timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            response = await provider.send(request)
    except (UpstreamError, TimeoutError):
        return None
    summary = _reply_text(bridge, response.body)
    if not summary:
        return None
    used = bridge.usage(response.body)
    note = {"role": "user", "content": f"Summary of the earlier conversation: {summary}"}
    if recent and recent[0].get("role") == "user":
        recent = [_merge_user(note, recent[0]), *recent[1:]]
        out = dict(body, messages=[*system, *recent])
    else:
        out = dict(body, messages=[*system, note, *recent])
    return out, used


def _merge_user(note: JSON, first: JSON) -> JSON:
    """Anthropic needs alternating roles: fold the summary into the first kept user turn."""
    content = first.get("content")
    if isinstance(content, str):
        return {**first, "content": f"{note['content']}\n\n{content}"}
    if isinstance(content, list):
        return {**first, "content": [{"type": "text", "text": note["content"]}, *content]}
    return first


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def _reply_text(bridge: Bridge, body: JSON) -> str:
    if bridge.upstream == "messages":
        return _text(body.get("content")).strip()
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return _text(message.get("content")).strip()
