"""Content is translated or refused, never silently dropped; tools and tool choices stay
consistent; text parts stay apart; refusals keep their stop reason (docs/translation.md)."""

from __future__ import annotations

import pytest
from anthropic.types import Message

from concord.translate.anthropic_openai import (
    Untranslatable,
    anthropic_request_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from tests.fakes.sdk import validate_anthropic_request, validate_openai_request

PDF = "JVBERi0xLjQK"
PNG = "iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": SCHEMA}}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}


def _anthropic(content: list[dict], **fields: object) -> dict:
    return {
        "model": "gpt",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": content}],
        **fields,
    }


def _openai(content: object, **fields: object) -> dict:
    return {"model": "claude", "messages": [{"role": "user", "content": content}], **fields}


def _refused(translate, body: dict) -> Untranslatable:
    with pytest.raises(Untranslatable) as caught:
        translate(body)
    return caught.value


# ---- Anthropic content -> OpenAI ----------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        {"type": "url", "url": "https://example.com/report.pdf"},
        {"type": "file", "file_id": "file_011"},
    ],
)
def test_anthropic_documents_openai_cannot_take_are_refused(source):
    body = _anthropic(
        [{"type": "text", "text": "Summarise"}, {"type": "document", "source": source}]
    )
    error = _refused(anthropic_request_to_openai, body)
    assert error.param == "messages.0.content.1"
    assert "messages.0.content.1" in str(error) and source["type"] in str(error)


def test_anthropic_image_file_source_is_refused():
    image = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    error = _refused(anthropic_request_to_openai, _anthropic([image]))
    assert error.param == "messages.0.content.0"


def test_a_refused_block_inside_a_content_document_is_named_by_its_full_path():
    inner = [
        {"type": "text", "text": "Page one."},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
    ]
    document = {"type": "document", "source": {"type": "content", "content": inner}}
    text = {"type": "text", "text": "Hi"}
    error = _refused(anthropic_request_to_openai, _anthropic([text, document]))
    assert error.param == "messages.0.content.1.source.content.1"
    assert str(error).startswith(f"{error.param}: an image with a 'file' source")


def test_anthropic_content_document_becomes_its_text_and_images():
    inner = [
        {"type": "text", "text": "Page one."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    document = {"type": "document", "source": {"type": "content", "content": inner}}
    as_string = {"type": "document", "source": {"type": "content", "content": "Plain."}}
    out = anthropic_request_to_openai(_anthropic([document, as_string]))
    validate_openai_request(out)
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Page one."},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "Plain."},
            ],
        }
    ]


def test_anthropic_blocks_with_no_openai_form_are_refused():
    search = {
        "type": "search_result",
        "source": "https://example.com",
        "title": "Example",
        "content": [{"type": "text", "text": "Found."}],
    }
    error = _refused(anthropic_request_to_openai, _anthropic([search]))
    assert error.param == "messages.0.content.0" and "search_result" in str(error)


def test_tool_result_documents_follow_as_user_parts_and_others_are_refused():
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
    }
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "ok"}, pdf],
    }
    out = anthropic_request_to_openai(_anthropic([result]))
    assert out["messages"][0] == {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    assert out["messages"][1]["content"][0]["file"]["file_data"].endswith(PDF)
    reference = {"type": "tool_reference", "tool_name": "clock"}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [reference]}
    error = _refused(anthropic_request_to_openai, _anthropic([result]))
    assert error.param == "messages.0.content.0.content.0"
    assert str(error).startswith("messages.0.content.0.content.0: 'tool_reference' blocks")


def test_anthropic_system_message_among_the_turns_stays_a_system_message():
    body = {
        "model": "gpt",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": [{"type": "text", "text": "Now be terse."}]},
            {"role": "user", "content": "Again"},
        ],
    }
    out = anthropic_request_to_openai(body)
    assert [m["role"] for m in out["messages"]] == ["user", "system", "user"]
    assert out["messages"][1]["content"] == "Now be terse."


# ---- OpenAI content -> Anthropic ----------------------------------------------------------------


def test_openai_file_given_only_by_id_is_refused():
    content = [
        {"type": "text", "text": "Read this"},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ]
    error = _refused(openai_request_to_anthropic, _openai(content))
    assert error.param == "messages[0].content[1]"
    assert str(error).startswith("messages[0].content[1]: a file given only by file_id")


def test_openai_audio_input_is_refused():
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    error = _refused(openai_request_to_anthropic, _openai([audio]))
    assert error.param == "messages[0].content[0]" and "input_audio" in str(error)


def test_openai_bare_base64_file_data_is_a_pdf_document():
    part = {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}}
    out = openai_request_to_anthropic(_openai([part]))
    validate_anthropic_request(out)
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "a.pdf",
        }
    ]


# ---- tools and tool choices ---------------------------------------------------------------------


def test_forcing_a_server_tool_is_refused():
    body = _anthropic(
        [{"type": "text", "text": "Search"}],
        tools=[WEB_SEARCH],
        tool_choice={"type": "tool", "name": "web_search"},
    )
    error = _refused(anthropic_request_to_openai, body)
    assert error.param == "tool_choice" and "web_search" in str(error)


def test_forcing_any_tool_when_only_server_tools_are_given_is_refused():
    body = _anthropic(
        [{"type": "text", "text": "Search"}], tools=[WEB_SEARCH], tool_choice={"type": "any"}
    )
    assert _refused(anthropic_request_to_openai, body).param == "tool_choice"


def test_server_tools_are_left_out_when_nothing_forces_them():
    tool = {"name": "weather", "input_schema": SCHEMA}
    body = _anthropic(
        [{"type": "text", "text": "Hi"}], tools=[WEB_SEARCH, tool], tool_choice={"type": "auto"}
    )
    out = anthropic_request_to_openai(body)
    validate_openai_request(out)
    assert [t["function"]["name"] for t in out["tools"]] == ["weather"]
    assert out["tool_choice"] == "auto"


def test_tool_choice_none_without_tools_is_dropped_both_ways():
    to_openai = anthropic_request_to_openai(
        _anthropic([{"type": "text", "text": "Hi"}], tool_choice={"type": "none"})
    )
    validate_openai_request(to_openai)
    assert "tool_choice" not in to_openai and "tools" not in to_openai
    to_anthropic = openai_request_to_anthropic(_openai("Hi", tool_choice="none"))
    assert "tool_choice" not in to_anthropic


@pytest.mark.parametrize(("mode", "kind"), [("required", "any"), ("auto", "auto")])
def test_allowed_tools_sends_only_those_tools(mode, kind):
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": "clock"}}],
        },
    }
    out = openai_request_to_anthropic(_openai("Time?", tools=[WEATHER, CLOCK], tool_choice=choice))
    validate_anthropic_request(out)
    assert [t["name"] for t in out["tools"]] == ["clock"]
    assert out["tool_choice"] == {"type": kind}


def test_allowed_tools_naming_no_given_tool_is_refused():
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "nope"}}],
        },
    }
    body = _openai("Hi", tools=[WEATHER], tool_choice=choice)
    assert _refused(openai_request_to_anthropic, body).param == "tool_choice"


def test_custom_tools_are_refused():
    custom = {"type": "custom", "custom": {"name": "sql", "description": "Run SQL"}}
    assert _refused(openai_request_to_anthropic, _openai("Hi", tools=[custom])).param == "tools[0]"
    choice = {"type": "custom", "custom": {"name": "sql"}}
    body = _openai("Hi", tools=[WEATHER], tool_choice=choice)
    assert _refused(openai_request_to_anthropic, body).param == "tool_choice"


def test_a_custom_tool_call_in_the_history_is_refused():
    call = {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "select 1"}}
    body = {
        "model": "claude",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
    }
    error = _refused(openai_request_to_anthropic, body)
    assert error.param == "messages[1].tool_calls[0]"
    assert str(error).startswith("messages[1].tool_calls[0]: ")


# ---- text parts ---------------------------------------------------------------------------------


def test_system_text_parts_stay_separate_blocks():
    body = {
        "model": "claude",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Rule one."},
                    {"type": "text", "text": "Rule two."},
                ],
            },
            {"role": "user", "content": "Hi"},
        ],
    }
    out = openai_request_to_anthropic(body)
    validate_anthropic_request(out)
    assert out["system"] == [
        {"type": "text", "text": "Rule one."},
        {"type": "text", "text": "Rule two."},
    ]


def test_one_system_text_stays_a_string():
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Hi"},
        ],
    }
    assert openai_request_to_anthropic(body)["system"] == "Be brief."


def test_tool_message_text_parts_stay_separate_blocks():
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    body = {
        "model": "claude",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": [
                    {"type": "text", "text": "Oslo: 3C."},
                    {"type": "text", "text": "Rome: 18C."},
                ],
            },
        ],
    }
    out = openai_request_to_anthropic(body)
    validate_anthropic_request(out)
    assert out["messages"][-1]["content"][0]["content"] == [
        {"type": "text", "text": "Oslo: 3C."},
        {"type": "text", "text": "Rome: 18C."},
    ]


# ---- refusals -----------------------------------------------------------------------------------


def test_openai_refusal_is_an_anthropic_refusal():
    body = {
        "id": "chatcmpl-1",
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I can't help with that.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }
    message = Message.model_validate(openai_response_to_anthropic(body))
    assert message.stop_reason == "refusal"
    assert message.content[0].text == "I can't help with that."


def test_blank_text_never_reaches_anthropic_as_a_text_block():
    """Anthropic refuses text blocks that are empty or only whitespace ("text content blocks
    must contain non-whitespace text"); agent histories often hold a model's "\n\n" before its
    tool calls. Blank text says nothing: it is left out, the rest of each turn kept."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "  \n"},
            {"role": "user", "content": [{"type": "text", "text": " "}, image]},
            {"role": "assistant", "content": "\n\n", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "user", "content": "\t"},
            {"role": "user", "content": "Thanks"},
        ],
    }
    out = openai_request_to_anthropic(body)
    blocks = [
        block
        for message in out["messages"]
        for block in (message["content"] if isinstance(message["content"], list) else [])
    ]
    texts = [block["text"] for block in blocks if block["type"] == "text"]
    assert all(text.strip() for text in texts)
    assert "system" not in out
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    ]


def test_stop_sequences_anthropic_refuses_are_refused_here_naming_stop():
    """Anthropic answers 400 to a stop sequence of only whitespace; the gateway says so first,
    naming the entry, and leaves out empty strings, which stop nothing."""
    kept = openai_request_to_anthropic(_openai("Hi", stop=["END", ""]))
    assert kept["stop_sequences"] == ["END"]
    assert "stop_sequences" not in openai_request_to_anthropic(_openai("Hi", stop=""))
    error = _refused(openai_request_to_anthropic, _openai("Hi", stop=["END", "\n"]))
    assert error.param == "stop[1]" and "whitespace" in str(error)
    assert _refused(openai_request_to_anthropic, _openai("Hi", stop=" ")).param == "stop"
