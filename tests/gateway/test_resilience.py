"""Retries, fallbacks, circuit breakers, context overflow and timeouts (SPEC §2.5)."""

from __future__ import annotations

import time

import openai
import pytest

from concord.providers.keys import KeyRing
from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import MakeGateway


def config(up: FakeUpstream, extra: str = "", overflow: str = "fallback") -> str:
    return f"""
    providers:
      a: {{type: openai, base_url: "{up.openai_url}", api_keys: [ka]}}
      b: {{type: openai, base_url: "{up.openai_url}", api_keys: [kb]}}
    models:
      gpt-4o:
        targets: [a/primary, b/secondary]
        fallbacks: [backup]
        context_window: 100000
      backup: {{targets: [b/backup-model], context_window: 100000}}
      small:
        targets: [a/small-model]
        fallbacks: [big]
        context_window: 1000
      big: {{targets: [b/big-model], context_window: 200000}}
      mid: {{targets: [a/mid-model], context_window: 4000}}
      solo: {{targets: [a/solo-model]}}
    defaults:
      timeout: 2s
      retry: {{attempts: 2, backoff: {{initial: 10ms, max: 20ms}}}}
      circuit_breaker: {{failures: 2, cooldown: 300ms}}
      context_overflow: {overflow}
    {extra}
    """


async def chat(client: openai.AsyncOpenAI, model: str = "gpt-4o", content: str = "hi"):
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}]
    )


async def test_retry_after_is_honoured_before_the_retry(make_gateway: MakeGateway, upstream):
    gw = make_gateway(config(upstream))
    upstream.script("primary", [Fault(status=429, retry_after=0.4), Fault(reply="ok")])
    started = time.monotonic()
    raw = await chat(gw.openai())
    assert time.monotonic() - started >= 0.4
    assert raw.parse().choices[0].message.content == "ok"
    assert raw.headers["x-concord-attempts"] == "2"
    assert [r.model for r in upstream.requests] == ["primary", "primary"]


async def test_failed_target_falls_over_to_the_next_then_to_the_fallback_model(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(config(upstream))
    upstream.script("primary", [Fault(status=500)] * 2)
    upstream.script("secondary", [Fault(status=503)] * 2)
    raw = await chat(gw.openai())
    assert [r.model for r in upstream.requests] == [
        "primary",
        "primary",
        "secondary",
        "secondary",
        "backup-model",
    ]
    assert raw.headers["x-concord-model"] == "backup"
    assert raw.headers["x-concord-provider"] == "b"
    assert raw.headers["x-concord-attempts"] == "5"
    assert raw.parse().model == "gpt-4o"


async def test_client_errors_are_returned_at_once(make_gateway: MakeGateway, upstream):
    gw = make_gateway(config(upstream))
    upstream.script("primary", [Fault(status=400, message="bad temperature")])
    with pytest.raises(openai.BadRequestError) as error:
        await chat(gw.openai())
    assert "bad temperature" in error.value.message
    assert len(upstream.requests) == 1
    headers = error.value.response.headers  # SPEC §3: who refused it
    assert (headers["x-concord-model"], headers["x-concord-provider"]) == ("gpt-4o", "a")


async def test_all_failed_is_502_listing_attempts_without_secrets(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(config(upstream))
    upstream.script("solo-model", [Fault(status=500), Fault(status=502)])
    with pytest.raises(openai.APIStatusError) as error:
        await chat(gw.openai(), model="solo")
    assert error.value.status_code == 502
    assert "a/solo-model: 500" in error.value.message and "a/solo-model: 502" in error.value.message
    assert "ka" not in error.value.message.split()


async def test_circuit_opens_then_half_open_probe_recovers(make_gateway: MakeGateway, upstream):
    gw = make_gateway(config(upstream))
    upstream.script("primary", [Fault(status=500)] * 2)
    await chat(gw.openai())  # two failures: the circuit of a/primary opens
    assert gw.state.runtime.breakers.state("a/primary") == "open"
    upstream.reset()
    raw = await chat(gw.openai())
    assert [r.model for r in upstream.requests] == ["secondary"]  # skipped before any call
    assert raw.headers["x-concord-provider"] == "b"
    time.sleep(0.35)  # the cooldown passes: half-open
    upstream.reset()
    await chat(gw.openai())
    assert [r.model for r in upstream.requests] == ["primary"]  # the probe succeeded
    assert gw.state.runtime.breakers.state("a/primary") == "closed"


async def test_context_overflow_falls_back_to_a_larger_window(make_gateway: MakeGateway, upstream):
    gw = make_gateway(config(upstream))
    upstream.script("small-model", [Fault(context_length=True)])
    raw = await chat(gw.openai(), model="small")
    assert [r.model for r in upstream.requests] == ["small-model", "big-model"]
    assert raw.headers["x-concord-model"] == "big"


async def test_context_overflow_truncate_drops_the_oldest_turns(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(config(upstream, overflow="truncate"))
    upstream.script("small-model", [Fault(context_length=True)])
    old = "lorem ipsum dolor sit amet " * 300  # ~1500 tokens: over the 1000-token window
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": old},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "latest question"},
    ]
    completion = await gw.openai().chat.completions.create(model="small", messages=messages)
    assert completion.choices[0].message.content == "Echo: latest question"
    retried = upstream.requests[-1]
    assert retried.model == "small-model"
    assert retried.json["messages"] == [messages[0], messages[3]]


def long_conversation(turns: int = 13) -> list[dict[str, str]]:
    """A system prompt and `turns` alternating turns (~100 tokens each), ending with the user."""
    roles = ["user", "assistant"]
    messages = [{"role": "system", "content": "be nice"}]
    messages += [
        {"role": roles[i % 2], "content": f"turn {i}: " + "lorem ipsum dolor sit amet " * 15}
        for i in range(turns - 1)
    ]
    return [*messages, {"role": "user", "content": "latest question"}]


@pytest.mark.parametrize(
    ("overflow", "faults"),
    [
        ("truncate", [Fault(context_length=True)]),
        ("summarize", [Fault(context_length=True), Fault(status=500)]),  # summary fails
    ],
)
async def test_context_overflow_truncates_when_upstream_refuses_what_fits_the_window(
    make_gateway: MakeGateway, upstream, overflow: str, faults: list[Fault]
):
    gw = make_gateway(config(upstream, overflow=overflow))
    upstream.script("mid-model", faults)
    messages = long_conversation()  # 14 messages, ~1400 tokens: inside the 4000-token window
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="mid", messages=messages
    )
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == "Echo: latest question"
    first, retried = upstream.requests[0], upstream.requests[-1]
    assert first.json["messages"] == messages
    assert retried.model == "mid-model"
    sent = retried.json["messages"]
    assert 2 <= len(sent) < len(messages)
    assert sent[0] == messages[0] and sent[-1] == messages[-1]
    assert sent[1]["role"] == "user" and sent[1:] == messages[-(len(sent) - 1) :]


async def test_per_attempt_timeout_moves_on(make_gateway: MakeGateway, upstream):
    gw = make_gateway(
        config(upstream, extra="routes: [{name: quick, use: $requested, timeout: 200ms}]")
    )
    upstream.script("primary", [Fault(delay=1.0), Fault(delay=1.0)])
    started = time.monotonic()
    raw = await chat(gw.openai())
    assert time.monotonic() - started < 0.9
    assert raw.headers["x-concord-provider"] == "b"
    assert gw.recorder.records[-1].attempts == 3


async def test_stream_fails_over_before_the_first_byte(make_gateway: MakeGateway, upstream):
    gw = make_gateway(config(upstream))
    upstream.script("primary", [Fault(status=503), Fault(drop_after=0)])
    stream = await gw.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Echo: x"
    assert [r.model for r in upstream.requests] == ["primary", "primary", "secondary"]


async def test_no_failover_after_the_first_byte(make_gateway: MakeGateway, upstream):
    gw = make_gateway(config(upstream))
    upstream.script("primary", [Fault(drop_after=2)])
    stream = await gw.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert [r.model for r in upstream.requests] == ["primary"]
    assert gw.recorder.records[-1].status == 502


async def test_context_overflow_summarize_condenses_older_turns(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(config(upstream, overflow="summarize"))
    summary = Fault(reply="They met in Oslo.", usage=Usage(300, 10))
    answer = Fault(usage=Usage(40, 5))
    upstream.script("small-model", [Fault(context_length=True), summary, answer])
    messages = [
        {"role": "user", "content": "We met in Oslo " * 200},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "where did we meet?"},
    ]
    completion = await gw.openai().chat.completions.create(model="small", messages=messages)
    assert completion.choices[0].message.content.startswith("Echo: Summary of the earlier")
    summary_call, retried = upstream.requests[1], upstream.requests[2]
    assert "We met in Oslo" in summary_call.json["messages"][0]["content"]
    assert retried.json["messages"] == [
        {
            "role": "user",
            "content": "Summary of the earlier conversation: They met in Oslo.\n\n"
            "where did we meet?",
        }
    ]
    record = gw.recorder.records[-1]  # the request pays for the summary it needed
    assert (record.input_tokens, record.output_tokens, record.attempts) == (340, 15, 3)


def error_first_config(up: FakeUpstream) -> str:
    """Two targets per model, one wire each; no retries, so each target is called once."""
    return f"""
    providers:
      oa: {{type: openai, base_url: "{up.openai_url}", api_keys: [ka]}}
      ob: {{type: openai, base_url: "{up.openai_url}", api_keys: [kb]}}
      aa: {{type: anthropic, base_url: "{up.url}", api_keys: [ka]}}
      ab: {{type: anthropic, base_url: "{up.url}", api_keys: [kb]}}
    models:
      gpt-duo: {{targets: [oa/gpt-first, ob/gpt-second]}}
      claude-duo: {{targets: [aa/claude-first, ab/claude-second]}}
    defaults:
      timeout: 2s
      retry: {{attempts: 1}}
    """


async def test_openai_stream_whose_first_event_is_an_error_fails_over(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(error_first_config(upstream))
    # HTTP 200, then `data: {"error": {"type": "server_error", ...}}` before any chunk
    upstream.script("gpt-first", [Fault(stream_error=500, message="The server had an error")])
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="gpt-duo", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert raw.status_code == 200
    assert raw.headers["x-concord-provider"] == "ob"
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == "Echo: x"
    assert [r.model for r in upstream.requests] == ["gpt-first", "gpt-second"]


async def test_anthropic_stream_whose_first_event_is_an_error_fails_over(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(error_first_config(upstream))
    # HTTP 200, then `event: error` / `{"type": "error", "error": {"type": "overloaded_error"}}`
    upstream.script("claude-first", [Fault(stream_error=529, message="Overloaded")])
    raw = await gw.anthropic().messages.with_raw_response.create(
        model="claude-duo",
        max_tokens=50,
        messages=[{"role": "user", "content": "x"}],
        stream=True,
    )
    assert raw.status_code == 200
    assert raw.headers["x-concord-provider"] == "ab"
    events = [event async for event in await raw.parse()]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "Echo: x"
    assert events[-1].type == "message_stop"
    assert [r.model for r in upstream.requests] == ["claude-first", "claude-second"]


async def test_retry_after_on_the_only_key_reaches_the_upstream_each_time(
    make_gateway: MakeGateway, upstream
):
    """The 429 benches the only key for Retry-After, and the retry sleeps Retry-After; a loop
    timer may wake the retry a hair (here 1 ms) before the key's cooldown ends, as uvloop's
    millisecond timers can. The retry must still reach the upstream, not fail on its own."""
    gw = make_gateway(
        f"""
        providers:
          up: {{type: openai, base_url: "{upstream.openai_url}", api_keys: [k1]}}
        models:
          solo: {{targets: [up/solo-model]}}
        defaults:
          timeout: 2s
          retry: {{attempts: 3}}
        """
    )
    now = [1000.0]  # one clock for the key cooldowns and the retry sleeps: no real waiting
    provider = gw.state.pool.get("up")
    provider.keys = KeyRing(
        provider.spec.api_keys, provider.spec.key_cooldown, clock=lambda: now[0]
    )

    async def wakes_a_millisecond_early(seconds: float) -> None:
        now[0] += max(seconds - 0.001, 0.0)

    gw.state.attempts.sleep = wakes_a_millisecond_early
    upstream.script(
        "solo-model",
        [Fault(status=429, retry_after=1), Fault(status=429, retry_after=1), Fault(reply="ok")],
    )
    raw = await chat(gw.openai(), model="solo")
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == "ok"
    assert [r.model for r in upstream.requests] == ["solo-model"] * 3
    assert raw.headers["x-concord-attempts"] == "3"
