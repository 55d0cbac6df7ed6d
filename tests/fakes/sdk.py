"""Check wire bodies with the official SDKs' own types, and accumulate streams the way they do."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from pydantic import TypeAdapter

from concord.providers.base import SSEEvent

_OPENAI_REQUEST = TypeAdapter(CompletionCreateParamsNonStreaming)
_ANTHROPIC_REQUEST = TypeAdapter(MessageCreateParamsNonStreaming)
_ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def _deep(value: Any) -> Any:
    """Consume pydantic's lazy iterators so nested items are validated too."""
    if isinstance(value, dict):
        return {key: _deep(item) for key, item in value.items()}
    if value is None or isinstance(value, str | bytes | int | float | bool):
        return value
    return [_deep(item) for item in value]


def validate_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    """Raises if `body` is not a valid chat completions request (streaming fields aside)."""
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return _deep(_OPENAI_REQUEST.validate_python(body))


def validate_anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    """Raises if `body` is not a valid Messages request."""
    body = {k: v for k, v in body.items() if k != "stream"}
    return _deep(_ANTHROPIC_REQUEST.validate_python(body))


def accumulate_openai(events: Iterable[SSEEvent]) -> ChatCompletion:
    """Feed chunks to the OpenAI SDK's stream accumulator; the stream must end with [DONE]."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    done = False
    for event in events:
        assert not done, "data after [DONE]"
        if event.data == "[DONE]":
            done = True
            continue
        assert event.event is None, "OpenAI chunks are unnamed events"
        state.handle_chunk(ChatCompletionChunk.model_validate(json.loads(event.data)))
    assert done, "the stream did not end with [DONE]"
    return ChatCompletion.model_validate(state.get_final_completion().model_dump())


def accumulate_anthropic(events: Iterable[SSEEvent]) -> Message:
    """Feed events to the Anthropic SDK's accumulator; checks names and the closing order."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    kinds: list[str] = []
    for event in events:
        payload = json.loads(event.data)
        assert event.event == payload["type"], "the SSE event name must match the payload type"
        kinds.append(payload["type"])
        if payload["type"] == "ping":
            continue
        parsed = _ANTHROPIC_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    assert kinds and kinds[0] == "message_start", kinds
    assert kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())
