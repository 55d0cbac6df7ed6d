"""SPEC §2.6: spend comes from the upstream's usage, in one shape whatever the wire format."""

from __future__ import annotations

import json

from concord.providers.base import SSEEvent
from concord.translate.usage import (
    StreamUsageMeter,
    Usage,
    usage_from_anthropic,
    usage_from_openai,
)


def test_openai_usage_counts_cached_tokens_inside_prompt_tokens():
    body = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 9,
            "total_tokens": 109,
            "prompt_tokens_details": {"cached_tokens": 64},
        }
    }
    assert usage_from_openai(body) == Usage(input_tokens=100, output_tokens=9, cached_tokens=64)


def test_embeddings_usage_has_no_completion_tokens():
    assert usage_from_openai({"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(8, 0, 0)


def test_anthropic_usage_adds_cache_reads_and_writes_to_input():
    body = {
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 80,
            "cache_creation_input_tokens": 20,
        }
    }
    assert usage_from_anthropic(body) == Usage(
        input_tokens=110, output_tokens=5, cached_tokens=80, cache_write_tokens=20
    )


def test_missing_usage_is_zero():
    assert usage_from_openai({"choices": []}) == Usage()
    assert usage_from_anthropic({"usage": None}) == Usage()


def test_meter_reads_openai_final_usage_chunk():
    meter = StreamUsageMeter("openai")
    meter.observe(SSEEvent(data=json.dumps({"choices": [{"delta": {"content": "hi"}}]})))
    meter.observe(
        SSEEvent(
            data=json.dumps(
                {
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 12,
                        "completion_tokens": 3,
                        "prompt_tokens_details": {"cached_tokens": 2},
                    },
                }
            )
        )
    )
    meter.observe(SSEEvent(data="[DONE]"))
    assert meter.usage == Usage(12, 3, 2)


def test_meter_combines_anthropic_start_and_delta():
    meter = StreamUsageMeter("anthropic")
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3}},
    }
    meter.observe(SSEEvent(data=json.dumps(start), event="message_start"))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 42},
    }
    meter.observe(SSEEvent(data=json.dumps(delta), event="message_delta"))
    assert meter.usage == Usage(input_tokens=10, output_tokens=42, cached_tokens=3)
