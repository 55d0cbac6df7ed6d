"""SPEC §3: legacy /v1/completions served by chat-only targets."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion

from concord.providers.base import SSEEvent
from concord.providers.mock import Reply, openai_chat_chunks, openai_chat_response
from concord.translate.completions import (
    ChatToCompletionStream,
    chat_response_to_completion,
    completion_request_to_chat,
)
from concord.translate.usage import Usage


def test_prompt_becomes_one_user_message_and_params_pass_through():
    out = completion_request_to_chat(
        {
            "model": "m",
            "prompt": "Say hi",
            "max_tokens": 5,
            "temperature": 0,
            "stop": ["\n"],
            "echo": True,
            "suffix": "x",
        }
    )
    assert out == {
        "model": "m",
        "max_tokens": 5,
        "temperature": 0,
        "stop": ["\n"],
        "messages": [{"role": "user", "content": "Say hi"}],
    }


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2, 3]])
def test_prompts_a_chat_model_cannot_take_are_refused(prompt):
    with pytest.raises(ValueError, match="prompt"):
        completion_request_to_chat({"model": "m", "prompt": prompt})


def test_chat_response_as_text_completion():
    chat = openai_chat_response("m", Reply(text="Hi there", truncated=True), Usage(3, 2))
    completion = Completion.model_validate(chat_response_to_completion(chat))
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "Hi there"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == 3 and completion.usage.completion_tokens == 2


def test_chat_stream_as_completion_chunks():
    translator = ChatToCompletionStream()
    out: list[SSEEvent] = []
    for event in openai_chat_chunks(
        "m", Reply(text="one two three"), Usage(1, 3), include_usage=True
    ):
        out += translator.feed(event)
    out += translator.finish()
    assert out[-1].data == "[DONE]"
    bodies = [json.loads(e.data) for e in out[:-1]]
    for body in bodies:
        assert body["object"] == "text_completion"
    assert "".join(c["text"] for b in bodies for c in b["choices"]) == "one two three"
    assert bodies[-2]["choices"][0]["finish_reason"] == "stop"
    assert bodies[-1]["usage"]["completion_tokens"] == 3
    assert sum(1 for e in out if e.data == "[DONE]") == 1
