"""Structured outputs, strict tools and effort, both ways (docs/translation.md)."""

from __future__ import annotations

import pytest

from concord.translate.anthropic_openai import (
    anthropic_request_to_openai,
    meets_openai_strict_rules,
    openai_request_to_anthropic,
)
from tests.fakes.sdk import validate_anthropic_request, validate_openai_request

HELLO = [{"role": "user", "content": "Weather in Oslo as JSON"}]
CLOSED = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
OPTIONAL = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
    "required": ["city"],
    "additionalProperties": False,
}


def _openai(**fields: object) -> dict:
    return {"model": "claude", "messages": HELLO, **fields}


def _anthropic(**fields: object) -> dict:
    return {"model": "gpt", "max_tokens": 50, "messages": HELLO, **fields}


def test_openai_json_schema_becomes_output_config_format():
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Weather", "schema": CLOSED, "strict": True},
    }
    out = openai_request_to_anthropic(_openai(response_format=response_format))
    validate_anthropic_request(out)
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": CLOSED}}


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "text"},
        {"type": "json_schema", "json_schema": {"name": "NoSchema"}},
    ],
)
def test_response_formats_without_a_schema_constrain_nothing(response_format):
    out = openai_request_to_anthropic(_openai(response_format=response_format))
    assert "output_config" not in out


def test_anthropic_output_format_becomes_a_strict_json_schema():
    config = {"format": {"type": "json_schema", "schema": CLOSED}}
    out = anthropic_request_to_openai(_anthropic(output_config=config))
    validate_openai_request(out)
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": CLOSED, "strict": True},
    }


def test_a_schema_with_optional_properties_is_sent_non_strict():
    config = {"format": {"type": "json_schema", "schema": OPTIONAL}}
    out = anthropic_request_to_openai(_anthropic(output_config=config))
    assert out["response_format"]["json_schema"]["strict"] is False


def test_strict_rules_look_into_nested_schemas():
    nested = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": OPTIONAL}},
        "required": ["items"],
        "additionalProperties": False,
    }
    assert meets_openai_strict_rules(CLOSED)
    assert not meets_openai_strict_rules(nested)
    assert not meets_openai_strict_rules({"type": "object", "properties": {}})
    assert meets_openai_strict_rules({"$defs": {"A": CLOSED}, "$ref": "#/$defs/A"})


def test_structured_output_round_trips():
    config = {"format": {"type": "json_schema", "schema": CLOSED}, "effort": "high"}
    original = _anthropic(output_config=config)
    back = openai_request_to_anthropic(anthropic_request_to_openai(original))
    assert back["output_config"] == config


def test_tool_strict_maps_both_ways():
    function = {"name": "weather", "parameters": CLOSED, "strict": True}
    out = openai_request_to_anthropic(_openai(tools=[{"type": "function", "function": function}]))
    validate_anthropic_request(out)
    assert out["tools"] == [{"name": "weather", "input_schema": CLOSED, "strict": True}]
    back = anthropic_request_to_openai(_anthropic(tools=out["tools"]))
    validate_openai_request(back)
    assert back["tools"][0]["function"]["strict"] is True


@pytest.mark.parametrize(
    ("openai_effort", "anthropic_effort"),
    [
        ("none", "low"),
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "xhigh"),
        ("max", "max"),
    ],
)
def test_reasoning_effort_becomes_output_config_effort(openai_effort, anthropic_effort):
    out = openai_request_to_anthropic(_openai(reasoning_effort=openai_effort))
    validate_anthropic_request(out)
    assert out["output_config"] == {"effort": anthropic_effort}


@pytest.mark.parametrize("effort", ["low", "medium", "high", "xhigh", "max"])
def test_output_config_effort_becomes_reasoning_effort(effort):
    out = anthropic_request_to_openai(_anthropic(output_config={"effort": effort}))
    validate_openai_request(out)
    assert out["reasoning_effort"] == effort
    assert "response_format" not in out


def test_effort_and_format_share_one_output_config():
    response_format = {"type": "json_schema", "json_schema": {"name": "W", "schema": CLOSED}}
    out = openai_request_to_anthropic(
        _openai(response_format=response_format, reasoning_effort="medium")
    )
    assert out["output_config"] == {
        "effort": "medium",
        "format": {"type": "json_schema", "schema": CLOSED},
    }


def test_openai_only_fields_are_dropped():
    out = openai_request_to_anthropic(
        _openai(
            service_tier="flex",
            store=True,
            metadata={"k": "v"},
            prompt_cache_key="p",
            safety_identifier="s",
            verbosity="low",
        )
    )
    validate_anthropic_request(out)
    assert set(out) == {"model", "messages", "max_tokens"}
