"""Context overflow's reshaping keeps conversations an upstream accepts (SPEC §2.5.1): a tool
result never loses the call before it, and the kept part opens as each API requires."""

from __future__ import annotations

from typing import Any

from concord.gateway.bridge import bridge_for
from concord.gateway.overflow import summarize, truncate
from concord.providers.base import UpstreamRequest, UpstreamResponse

CHAT = bridge_for("chat", frozenset({"chat"}))
MESSAGES = bridge_for("messages", frozenset({"messages"}))
LONG = "lorem ipsum " * 400


def openai_agent_loop() -> list[dict[str, Any]]:
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first " + LONG},
        {"role": "assistant", "content": "ok " + LONG},
        {"role": "user", "content": "use the tool"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": "result " + LONG},
    ]


def anthropic_agent_loop() -> list[dict[str, Any]]:
    use = {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_9", "content": "result " + LONG}
    return [
        {"role": "user", "content": "first " + LONG},
        {"role": "assistant", "content": "ok " + LONG},
        {"role": "user", "content": [{"type": "text", "text": "use the tool"}]},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [result]},
        {"role": "assistant", "content": [dict(use, id="toolu_10")]},
        {"role": "user", "content": [dict(result, tool_use_id="toolu_10")]},
    ]


def test_truncate_keeps_each_tool_result_with_its_call() -> None:
    out = truncate(CHAT, {"model": "m", "messages": openai_agent_loop()}, 1000)
    assert out is not None
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool"]
    assert out["messages"][1]["content"] == "use the tool"


def test_truncate_never_opens_an_anthropic_conversation_with_a_tool_result() -> None:
    out = truncate(
        MESSAGES, {"model": "m", "max_tokens": 10, "messages": anthropic_agent_loop()}, 1000
    )
    assert out is not None
    first = out["messages"][0]
    assert first == {"role": "user", "content": [{"type": "text", "text": "use the tool"}]}
    # still too long with both calls: the older call goes with its result, the latest stays
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"][0]["id"] == "toolu_10"
    assert out["messages"][2]["content"][0]["tool_use_id"] == "toolu_10"


def test_truncate_shortens_an_agent_loop_by_its_oldest_calls() -> None:
    """One question, then a long chain of calls: the oldest calls go, each with every result
    it had, until the input fits; the question and the latest calls stay."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "find it"},
    ]
    for n in range(8):
        function = {"name": "f", "arguments": "{}"}
        calls = [{"id": f"call_{n}_{k}", "type": "function", "function": function} for k in (0, 1)]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        messages += [
            {"role": "tool", "tool_call_id": call["id"], "content": f"result {n} " + LONG[:1200]}
            for call in calls
        ]
    out = truncate(CHAT, {"model": "m", "messages": messages}, 2000)
    assert out is not None
    kept = out["messages"]
    assert kept[:2] == messages[:2]
    assert kept[-3:] == messages[-3:]  # the latest call and both its results
    assert 3 + 2 <= len(kept) < len(messages)
    answered = {m["tool_call_id"] for m in kept if m["role"] == "tool"}
    asked = {c["id"] for m in kept if m["role"] == "assistant" for c in m["tool_calls"]}
    assert answered == asked  # no result without its call, no call without its results
    assert kept[2]["role"] == "assistant"


class Summarizer:
    """A provider whose every answer is a one-line summary."""

    name = "fake"

    def __init__(self, wire: str) -> None:
        self.wire = wire

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self.wire == "messages":
            body = {"content": [{"type": "text", "text": "they talked"}], "usage": {}}
        else:
            body = {"choices": [{"message": {"content": "they talked"}}], "usage": {}}
        return UpstreamResponse(200, body)


async def test_summarize_keeps_an_agent_loops_last_call_with_its_result() -> None:
    body = {"model": "m", "messages": openai_agent_loop()}
    summarized = await summarize(Summarizer("chat"), CHAT, body, 1000, 5.0)  # type: ignore[arg-type]
    assert summarized is not None
    messages = summarized[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[1]["content"].startswith("Summary of the earlier conversation: they talked")
    assert messages[2]["tool_calls"][0]["id"] == messages[3]["tool_call_id"]


async def test_summarize_never_puts_text_before_an_anthropic_tool_result() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": anthropic_agent_loop()}
    summarized = await summarize(Summarizer("messages"), MESSAGES, body, 1000, 5.0)  # type: ignore[arg-type]
    assert summarized is not None
    messages = summarized[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"].startswith("Summary of the earlier conversation")
    assert messages[1]["content"][0]["type"] == "tool_use"
    assert messages[2]["content"][0]["type"] == "tool_result"
