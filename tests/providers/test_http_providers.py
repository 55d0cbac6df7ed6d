"""The openai, azure and anthropic adapters against a fake upstream (SPEC §2.2, §2.5)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest
from anthropic.types import Message
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from concord.engine.graph import ProviderSpec
from concord.providers.base import (
    ContextLengthError,
    SSEEvent,
    UpstreamConnectionError,
    UpstreamRequest,
    UpstreamStatusError,
    UpstreamTimeout,
)
from concord.providers.http import KEY_READY_GRACE
from concord.providers.registry import build_provider
from tests.fakes.sdk import accumulate_anthropic, accumulate_openai
from tests.fakes.upstream import FakeUpstream, Fault

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}
MESSAGES = {
    "model": "claude",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi you"}],
}


def chat(stream=False, **body):
    full = {**CHAT, **body}
    if stream:
        full |= {"stream": True, "stream_options": {"include_usage": True}}
    return full


async def collect(stream):
    return [event async for event in stream]


@pytest.fixture
async def openai(upstream: FakeUpstream):
    provider = build_provider(
        ProviderSpec(
            name="openai",
            type="openai",
            base_url=upstream.openai_url,
            api_keys=("sk-one", "sk-two"),
            headers={"OpenAI-Organization": "org-1"},
            key_cooldown=60,
        )
    )
    yield provider
    await provider.close()


@pytest.fixture
async def anthropic(upstream: FakeUpstream):
    spec = ProviderSpec(
        name="anthropic", type="anthropic", base_url=upstream.url, api_keys=("sk-ant",)
    )
    provider = build_provider(spec)
    yield provider
    await provider.close()


async def test_openai_chat_success(openai, upstream):
    response = await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    completion = ChatCompletion.model_validate(response.body)
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.usage.prompt_tokens == 2 and completion.usage.completion_tokens == 3
    sent = upstream.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-one"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.json == chat()


async def test_a_cookie_the_upstream_sets_is_never_sent_back(upstream):
    """One client's answer must not hand a cookie to every later call of the shared session."""
    upstream.set_cookie = "__cf_bm=tenant-a-session; Path=/; HttpOnly"
    # a host name, not an IP: cookie jars keep cookies only for names
    base_url = upstream.openai_url.replace("127.0.0.1", "localhost")
    spec = ProviderSpec(name="openai", type="openai", base_url=base_url, api_keys=("sk-one",))
    provider = build_provider(spec)
    try:
        for _ in range(2):
            await provider.send(UpstreamRequest("chat", chat(), timeout=5))
        stream = await provider.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
        await collect(stream)
    finally:
        await provider.close()
    assert len(upstream.requests) == 3
    assert [sent.headers.get("cookie") for sent in upstream.requests] == [None, None, None]


async def test_calls_one_after_another_share_one_pooled_connection(openai, upstream):
    for _ in range(5):
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    upstream.script("gpt-4o", [Fault(status=500)])
    with pytest.raises(UpstreamStatusError):
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert len({sent.client_port for sent in upstream.requests}) == 1


async def test_openai_completions_and_embeddings_paths(openai, upstream):
    completion = await openai.send(
        UpstreamRequest("completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "a b"}, 5)
    )
    assert Completion.model_validate(completion.body).choices[0].text == "Echo: a b"
    embedded = await openai.send(
        UpstreamRequest("embeddings", {"model": "e", "input": ["x", "y"], "dimensions": 8}, 5)
    )
    vectors = CreateEmbeddingResponse.model_validate(embedded.body).data
    assert [len(v.embedding) for v in vectors] == [8, 8]
    assert [r.path for r in upstream.requests] == ["/v1/completions", "/v1/embeddings"]


async def test_openai_stream_yields_chunks_with_usage(openai):
    stream = await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    assert stream.status == 200
    completion = accumulate_openai(await collect(stream))
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.usage.total_tokens == 5


async def test_status_error_carries_status_retry_after_and_body(openai, upstream):
    upstream.script("gpt-4o", [Fault(status=503, retry_after=7, message="down for a bit")])
    with pytest.raises(UpstreamStatusError) as caught:
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    error = caught.value
    assert (error.status, error.retry_after) == (503, 7.0)
    assert error.body["error"]["message"] == "down for a bit"
    assert error.kind == "status"


async def test_retry_after_as_http_date(openai, upstream):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    upstream.script("gpt-4o", [Fault(status=500, retry_after=when)])
    with pytest.raises(UpstreamStatusError) as caught:
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert 25 <= caught.value.retry_after <= 31


async def test_429_cools_the_key_and_the_next_key_answers(openai, upstream):
    upstream.script("gpt-4o", [Fault(status=429, retry_after=20)])
    response = await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert response.status == 200
    assert [r.headers["authorization"] for r in upstream.requests] == [
        "Bearer sk-one",
        "Bearer sk-two",
    ]
    first, second = openai.key_status()
    # SPEC §2.2: a 429 benches the key for the model that answered it, not for every model
    assert first["key"] == "key#1" and first["cooldown_until"] is None
    assert 15 < first["models"]["gpt-4o"] - time.time() <= 20
    assert second == {"key": "key#2", "cooldown_until": None}
    # The cooled key stays benched: the next call goes straight to the second key.
    await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-two"
    assert "sk-one" not in repr(openai.key_status())


async def test_every_key_rejected_raises_the_last_error_and_provider_is_unavailable(
    openai, upstream
):
    upstream.script("gpt-4o", [Fault(status=401), Fault(status=403)])
    with pytest.raises(UpstreamStatusError) as caught:
        await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    assert caught.value.status == 403
    assert not openai.available
    with pytest.raises(UpstreamStatusError) as benched:
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert benched.value.status == 429 and benched.value.retry_after > 0
    assert len(upstream.requests) == 2


async def test_rejected_key_never_appears_in_the_error(upstream):
    provider = build_provider(
        ProviderSpec(name="o", type="openai", base_url=upstream.openai_url, api_keys=("sk-secret",))
    )
    upstream.script("*", [Fault(status=401, message="Incorrect API key provided: sk-secret.")])
    with pytest.raises(UpstreamStatusError) as caught:
        await provider.send(UpstreamRequest("chat", chat(), timeout=5))
    await provider.close()
    assert "sk-secret" not in str(caught.value)
    assert "sk-secret" not in repr(caught.value.body)


async def test_send_timeout(openai, upstream):
    upstream.script("gpt-4o", [Fault(delay=2)])
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await openai.send(UpstreamRequest("chat", chat(), timeout=0.2))
    assert time.monotonic() - started < 1
    assert caught.value.kind == "timeout"


async def test_a_send_cancelled_from_outside_stays_cancelled_and_leaves_no_timeout(
    openai, upstream
):
    """A client hanging up cancels the call: that is not an upstream timeout, and the call's
    deadline must not fire later into whatever the task does next."""
    upstream.script("gpt-4o", [Fault(delay=2)])
    call = asyncio.ensure_future(openai.send(UpstreamRequest("chat", chat(), timeout=0.3)))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.4)  # past the call's deadline: this task must not be cancelled
    assert not asyncio.current_task().cancelling()


async def test_stream_first_byte_timeout_is_raised_by_stream(openai, upstream):
    upstream.script("gpt-4o", [Fault(delay=2)])
    with pytest.raises(UpstreamTimeout):
        await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=0.2))


async def test_stream_silence_between_chunks_times_out_in_the_iterator(openai, upstream):
    upstream.script("gpt-4o", [Fault(chunk_delay=0.6)])
    stream = await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=0.3))
    events = []
    with pytest.raises(UpstreamTimeout):
        async for event in stream:
            events.append(event)
    assert len(events) == 1  # the first chunk arrived in time


@pytest.mark.parametrize(
    "cut",
    [
        Fault(drop_after=2),  # the connection dropped
        Fault(end_after=2),  # closed cleanly, but before any choice finished: cut short too
    ],
)
async def test_a_stream_cut_short_raises_connection_error_after_the_events_it_sent(
    openai, upstream, cut: Fault
):
    upstream.script("gpt-4o", [cut])
    stream = await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    events = []
    with pytest.raises(UpstreamConnectionError):
        async for event in stream:
            events.append(event)
    assert len(events) == 2


async def test_connection_refused_is_a_connection_error():
    provider = build_provider(
        ProviderSpec(name="dead", type="openai", base_url="http://127.0.0.1:9/v1")
    )
    with pytest.raises(UpstreamConnectionError) as caught:
        await provider.send(UpstreamRequest("chat", chat(), timeout=2))
    await provider.close()
    assert caught.value.kind == "connection"


async def test_openai_context_length_error(openai, upstream):
    upstream.script("gpt-4o", [Fault(context_length=True)])
    with pytest.raises(ContextLengthError) as caught:
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert caught.value.status == 400
    assert caught.value.body["error"]["code"] == "context_length_exceeded"


async def test_plain_400_is_not_a_context_error(openai, upstream):
    upstream.script("gpt-4o", [Fault(status=400, message="temperature must be <= 2")])
    with pytest.raises(UpstreamStatusError) as caught:
        await openai.send(UpstreamRequest("chat", chat(), timeout=5))
    assert not isinstance(caught.value, ContextLengthError)


async def test_client_disconnect_cancels_the_upstream_stream(openai, upstream):
    upstream.script("gpt-4o", [Fault(chunk_delay=0.05, reply=" ".join(["word"] * 40))])
    stream = await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    async for _event in stream:
        break
    await stream.aclose()
    for _ in range(50):
        if upstream.disconnects:
            break
        await asyncio.sleep(0.02)
    assert upstream.disconnects == 1


async def test_azure_deployment_path_api_version_and_api_key(upstream):
    provider = build_provider(
        ProviderSpec(
            name="azure-eu",
            type="azure",
            base_url=upstream.url,
            api_version="2024-10-21",
            api_keys=("az-key",),
        )
    )
    response = await provider.send(UpstreamRequest("chat", chat(model="gpt4o-prod"), timeout=5))
    await provider.close()
    assert ChatCompletion.model_validate(response.body).model == "gpt4o-prod"
    sent = upstream.requests[0]
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == "az-key"
    assert "authorization" not in sent.headers


async def test_azure_without_keys_is_unavailable(upstream):
    provider = build_provider(ProviderSpec(name="az", type="azure", base_url=upstream.url))
    assert not provider.available
    with pytest.raises(UpstreamStatusError):
        await provider.send(UpstreamRequest("chat", chat(), timeout=5))
    assert upstream.requests == []


async def test_anthropic_messages_success_and_headers(anthropic, upstream):
    response = await anthropic.send(UpstreamRequest("messages", MESSAGES, timeout=5))
    message = Message.model_validate(response.body)
    assert message.content[0].text == "Echo: hi you"
    assert message.usage.input_tokens == 2 and message.usage.output_tokens == 3
    sent = upstream.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant"
    assert sent.headers["anthropic-version"] == "2023-06-01"


async def test_anthropic_stream_full_event_sequence(anthropic):
    stream = await anthropic.stream(
        UpstreamRequest("messages", {**MESSAGES, "stream": True}, timeout=5)
    )
    message = accumulate_anthropic(await collect(stream))
    assert message.content[0].text == "Echo: hi you"
    assert message.stop_reason == "end_turn"


async def test_anthropic_context_length_and_overloaded(anthropic, upstream):
    upstream.script("claude", [Fault(context_length=True), Fault(status=529, retry_after=1)])
    with pytest.raises(ContextLengthError):
        await anthropic.send(UpstreamRequest("messages", MESSAGES, timeout=5))
    with pytest.raises(UpstreamStatusError) as caught:
        await anthropic.send(UpstreamRequest("messages", MESSAGES, timeout=5))
    assert caught.value.status == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


async def test_fake_reports_scripted_usage_and_tool_calls(openai, upstream):
    from concord.translate.usage import Usage

    upstream.script(
        "gpt-4o",
        [
            Fault(usage=Usage(100, 5, cached_tokens=40)),
            Fault(tool_call="weather", tool_arguments='{"city":"Oslo"}'),
        ],
    )
    first = ChatCompletion.model_validate(
        (await openai.send(UpstreamRequest("chat", chat(), timeout=5))).body
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 40
    second = ChatCompletion.model_validate(
        (await openai.send(UpstreamRequest("chat", chat(), timeout=5))).body
    )
    assert second.choices[0].finish_reason == "tool_calls"
    assert second.choices[0].message.tool_calls[0].function.arguments == '{"city":"Oslo"}'


def test_fake_upstream_runs_in_a_thread_for_sync_tests():
    import json
    import urllib.request

    fake = FakeUpstream.start_in_thread()
    try:
        request = urllib.request.Request(
            fake.openai_url + "/chat/completions",
            data=json.dumps(CHAT).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
    finally:
        fake.stop()
    assert body["choices"][0]["message"]["content"] == "Echo: hello there"
    assert fake.requests[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("request_too_large", 413),
        ("brand_new_error", 502),
    ],
)
async def test_anthropic_stream_opening_with_an_error_event_raises_its_status(
    anthropic, upstream, error_type, status
):
    upstream.script("claude", [Fault(stream_error=500, error_type=error_type, message="Nope")])
    with pytest.raises(UpstreamStatusError) as caught:
        await anthropic.stream(UpstreamRequest("messages", {**MESSAGES, "stream": True}, timeout=5))
    assert type(caught.value) is UpstreamStatusError
    assert caught.value.status == status
    assert caught.value.body == {"type": "error", "error": {"type": error_type, "message": "Nope"}}
    assert "Nope" in caught.value.message


async def test_openai_stream_opening_with_an_error_event_raises_its_status(openai, upstream):
    upstream.script(
        "gpt-4o",
        [Fault(stream_error=500, message="boom sk-one"), Fault(stream_error=429)],
    )
    with pytest.raises(UpstreamStatusError) as caught:
        await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    assert caught.value.status == 500
    assert caught.value.body["error"]["type"] == "server_error"
    assert "sk-one" not in caught.value.message and "sk-one" not in repr(caught.value.body)
    # a rate-limit error event (code "rate_limit_exceeded") cools the key like a 429 answer
    stream = await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    assert (
        accumulate_openai(await collect(stream)).choices[0].message.content == "Echo: hello there"
    )
    assert [r.headers["authorization"] for r in upstream.requests[1:]] == [
        "Bearer sk-one",
        "Bearer sk-two",
    ]
    assert openai.key_status()[0]["models"]["gpt-4o"] is not None


async def test_stream_opening_with_a_context_length_error_is_a_context_length_error(
    openai, anthropic, upstream
):
    upstream.script(
        "gpt-4o",
        [Fault(stream_error=400, code="context_length_exceeded", message="too many tokens")],
    )
    upstream.script("claude", [Fault(stream_error=400, message="prompt is too long: 9 > 8")])
    with pytest.raises(ContextLengthError) as caught:
        await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    assert caught.value.status == 400
    with pytest.raises(ContextLengthError):
        await anthropic.stream(UpstreamRequest("messages", {**MESSAGES, "stream": True}, timeout=5))


async def test_a_key_back_within_the_grace_is_waited_for_not_refused(upstream):
    provider = build_provider(
        ProviderSpec(name="up", type="openai", base_url=upstream.openai_url, api_keys=("k1",))
    )
    try:
        provider.keys.cool_down("k1", KEY_READY_GRACE / 2)
        response = await provider.send(UpstreamRequest("chat", chat(), timeout=5))
        assert response.status == 200
        assert len(upstream.requests) == 1
        provider.keys.cool_down("k1", 30)
        with pytest.raises(UpstreamStatusError) as benched:
            await provider.send(UpstreamRequest("chat", chat(), timeout=5))
        assert benched.value.status == 429 and 29 < benched.value.retry_after <= 30
        assert len(upstream.requests) == 1
    finally:
        await provider.close()


async def test_openai_stream_without_done_after_a_finished_choice_is_complete(openai, upstream):
    """Some OpenAI-compatible servers leave `data: [DONE]` out: a clean close after a chunk
    with a finish_reason (here followed by the usage chunk) ends the stream without an error."""
    upstream.script("gpt-4o", [Fault(omit_done=True)])
    stream = await openai.stream(UpstreamRequest("chat", chat(stream=True), timeout=5))
    events = await collect(stream)
    assert events[-1].data != "[DONE]" and '"usage":{' in events[-1].data
    completion = accumulate_openai([*events, SSEEvent(data="[DONE]")])
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"


async def test_anthropic_stream_still_needs_message_stop(anthropic, upstream):
    body = {**MESSAGES, "stream": True}
    upstream.script("claude", [Fault(end_after=-1)])  # everything but message_stop
    stream = await anthropic.stream(UpstreamRequest("messages", body, timeout=5))
    events = []
    with pytest.raises(UpstreamConnectionError):
        async for event in stream:
            events.append(event)
    assert events[-1].event == "message_delta"


@pytest.mark.parametrize(
    ("data", "finished"),
    [
        ('{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}', True),
        ('{"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}', True),
        ('{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}', False),
        ('{"choices":[{"delta":{"content":"\\"finish_reason\\":\\"stop\\""}}]}', False),
    ],
)
def test_a_finished_choice_is_found_without_parsing(data, finished):
    from concord.providers.http import _FINISHED

    assert bool(_FINISHED.search(data)) is finished
