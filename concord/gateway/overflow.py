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
    last one at the latest, so no reply or tool result is left without what came before it.
    When only that question and what answers it are left (an agent loop's long chain of tool
    calls), the oldest calls go next, each with its results: the latest one always stays."""
    messages = body.get("messages")
    if bridge.upstream not in ("chat", "messages") or not isinstance(messages, list):
        return None
    budget = _budget(bridge, body, window)
    kept = list(messages)
    # turns from the last plain user turn on stay first: the question and what answers to it
    last_open = next((i for i in reversed(range(len(kept))) if _plain_user(kept[i])), None)
    if last_open is None:
        return None
    kind = _kind(bridge)
    out = dict(body)
    out["messages"] = kept
    dropped = False
    while estimate(kind, out) > budget:
        if _first_turn(kept) < last_open:
            last_open -= _drop_oldest_turn(kept, last_open)
        elif not _drop_oldest_exchange(kept, last_open):
            break
        dropped = True
    return out if dropped else None


def _first_turn(messages: list[JSON]) -> int:
    return next(i for i, m in enumerate(messages) if m.get("role") not in _SYSTEM_ROLES)


def _drop_oldest_turn(kept: list[JSON], last_open: int) -> int:
    """Drop the oldest turn before `last_open`, and the replies and tool results it leaves
    orphaned (a conversation must open with a user turn); returns how many went."""
    del kept[_first_turn(kept)]
    count = 1
    while True:
        first = _first_turn(kept)
        if first >= last_open - count or _plain_user(kept[first]):
            return count
        del kept[first]
        count += 1


def _drop_oldest_exchange(kept: list[JSON], last_open: int) -> bool:
    """Drop the first assistant turn after the question at `last_open` with what follows it up
    to the next assistant turn (its tool results); False when only the latest is left."""
    starts = [i for i in range(last_open + 1, len(kept)) if kept[i].get("role") == "assistant"]
    if len(starts) < 2:
        return False
    del kept[starts[0] : starts[1]]
    return True


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
