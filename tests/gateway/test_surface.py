"""The HTTP surface on the mock provider: endpoints, auth, validation, headers (SPEC §2.8, §3)."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from tests.gateway.conftest import CLIENT_KEY, MakeGateway

MOCK = """
providers:
  demo: {type: mock}
  slow: {type: mock, latency: 300ms}
models:
  gpt-4o:
    targets: [demo/gpt-4o]
    price: {input: 2.5, output: 10}
  slow-model: {targets: [slow/x]}
  text-embedding-3-small: {targets: [demo/te3s], price: {input: 0.02}}
  claude-sonnet: {targets: [demo/claude-sonnet]}
routes:
  - name: no-free-embeddings
    when: {endpoint: embeddings, model: blocked-*}
    reject: {status: 403, message: "Embeddings are not part of the free tier"}
  - name: capped
    when: {model: capped}
    use: gpt-4o
    params: {set: {temperature: 0}, max: {max_tokens: 5}}
"""


async def test_chat_answers_with_the_requested_model_and_concord_headers(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"x-request-id": "req-abc"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.model == "gpt-4o"
    headers = raw.headers
    assert headers["x-request-id"] == "req-abc"
    assert headers["x-concord-model"] == "gpt-4o"
    assert headers["x-concord-provider"] == "demo"
    assert headers["x-concord-attempts"] == "1"
    assert headers["x-concord-cache"] == "bypass"
    assert headers["x-concord-config"] == gw.state.graph.version
    assert headers["x-concord-route"]
    record = gw.recorder.records[-1]
    assert (record.workspace, record.key, record.status) == ("acme", "test-key", 200)
    assert record.input_tokens == completion.usage.prompt_tokens
    expected = (record.input_tokens * 2.5 + record.output_tokens * 10) / 1e6
    assert record.cost_usd == pytest.approx(expected)


async def test_chat_stream_honours_include_usage(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    client = gw.openai()
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.model == "gpt-4o" for c in chunks)

    plain = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    plain_chunks = [chunk async for chunk in plain]
    assert all(c.usage is None for c in plain_chunks)
    assert all(c.choices for c in plain_chunks)  # the usage-only chunk was not forwarded
    assert gw.recorder.records[-1].output_tokens > 0  # ...but usage was still recorded


async def test_stream_uses_sse_content_type_and_done(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    response = await gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")


async def test_messages_completions_embeddings_and_models(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    message = await gw.anthropic().messages.create(
        model="claude-sonnet", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "Echo: hi" and message.model == "claude-sonnet"

    completion = await gw.openai().completions.create(model="gpt-4o", prompt="say this")
    assert completion.choices[0].text == "Echo: say this"

    embedding = await gw.openai().embeddings.create(model="text-embedding-3-small", input="hi")
    assert len(embedding.data[0].embedding) == 1536

    catalog = ["gpt-4o", "slow-model", "text-embedding-3-small", "claude-sonnet"]
    models = await gw.openai().models.list()
    assert [m.id for m in models.data] == catalog
    # the Anthropic SDK gets Anthropic's model page, and pages through it to the end
    listed = [m async for m in gw.anthropic().models.list()]
    assert [m.id for m in listed] == catalog
    assert all(m.type == "model" and m.display_name == m.id for m in listed)


async def test_models_retrieve_returns_the_listed_model_in_both_sdks(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    listed = {m.id: m for m in (await gw.openai().models.list()).data}
    model = await gw.openai().models.retrieve("gpt-4o")
    assert model == listed["gpt-4o"]
    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "concord")
    paged = {m.id: m async for m in gw.anthropic().models.list()}
    info = await gw.anthropic().models.retrieve("claude-sonnet")
    assert info == paged["claude-sonnet"]
    assert (info.type, info.id, info.display_name) == ("model", "claude-sonnet", "claude-sonnet")
    response = await gw.http.get(
        "/v1/models/gpt-4o", headers={"x-api-key": CLIENT_KEY, "x-request-id": "req-7"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-7"
    assert response.headers["x-concord-config"] == gw.state.graph.version


async def test_models_retrieve_takes_an_id_with_a_slash(make_gateway: MakeGateway):
    gw = make_gateway(MOCK.replace("models:\n", "models:\n  org/llama-3: {targets: [demo/x]}\n"))
    model = await gw.openai().models.retrieve("org/llama-3")
    assert model.id == "org/llama-3"
    info = await gw.anthropic().models.retrieve("org/llama-3")
    assert info.id == "org/llama-3"


async def test_models_retrieve_unknown_or_hidden_model_is_404(make_gateway: MakeGateway):
    workspaces = "workspaces:\n  acme: {models: [gpt-4o]}\n"
    gw = make_gateway(MOCK + workspaces)
    assert [m.id for m in (await gw.openai().models.list()).data] == ["gpt-4o"]
    for name in ("nope", "claude-sonnet"):  # not in the catalog; not visible to acme
        with pytest.raises(openai.NotFoundError) as oai:
            await gw.openai().models.retrieve(name)
        assert oai.value.body["code"] == "model_not_found"
        assert oai.value.body["param"] == "model"
        assert oai.value.response.headers["x-concord-config"] == gw.state.graph.version
        with pytest.raises(anthropic.NotFoundError) as ant:
            await gw.anthropic().models.retrieve(name)
        assert ant.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        await gw.anthropic(key="ck-wrong").models.retrieve("gpt-4o")
    with pytest.raises(openai.AuthenticationError):
        await gw.openai(key="ck-wrong").models.retrieve("gpt-4o")


async def test_unknown_key_is_401_in_both_wire_formats(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    with pytest.raises(openai.AuthenticationError) as oai:
        await gw.openai(key="ck-wrong").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert oai.value.status_code == 401
    assert oai.value.body["code"] == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as ant:
        await gw.anthropic(key="ck-wrong").messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert ant.value.body["error"]["type"] == "authentication_error"
    response = await gw.http.get("/v1/models")
    assert response.status_code == 401
    with pytest.raises(anthropic.AuthenticationError) as listing:
        await gw.anthropic(key="ck-wrong").models.list()
    assert listing.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "header",
    [
        {"authorization": f"Bearer {CLIENT_KEY}"},
        {"authorization": f"bearer {CLIENT_KEY}"},
        {"authorization": CLIENT_KEY},  # the `Bearer` prefix is optional
        {"x-api-key": CLIENT_KEY},
        {"X-API-Key": CLIENT_KEY},
    ],
)
async def test_every_way_of_sending_the_key_is_taken(
    make_gateway: MakeGateway, header: dict[str, str]
):
    gw = make_gateway(MOCK)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    response = await gw.http.post("/v1/chat/completions", json=body, headers=header)
    assert response.status_code == 200, response.text
    for wrong in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer  "):
        refused = await gw.http.post(
            "/v1/chat/completions", json=body, headers={"authorization": wrong}
        )
        assert refused.status_code == 401
    assert "Missing API key" in refused.json()["error"]["message"]  # `Bearer` is not a key


async def test_expired_key_is_refused(make_gateway: MakeGateway):
    from tests.gateway.conftest import CLIENT_KEY_SHA

    auth = (
        "auth:\n  keys:\n"
        f"    - {{name: old, sha256: {CLIENT_KEY_SHA}, expires: 2020-01-01T00:00:00Z}}\n"
    )
    gw = make_gateway(MOCK, auth=auth)
    with pytest.raises(openai.AuthenticationError):
        await gw.openai().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )


async def test_open_mode_serves_without_a_key_as_workspace_default(make_gateway: MakeGateway):
    gw = make_gateway(MOCK, auth="auth: {mode: open}\n")
    response = await gw.http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 200
    assert gw.recorder.records[-1].workspace == "default"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": "hi"}, "messages"),
        (
            "/v1/messages",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        ("/v1/embeddings", {"model": "text-embedding-3-small"}, "input"),
        ("/v1/completions", {"model": "gpt-4o"}, "prompt"),
    ],
)
async def test_invalid_body_is_400_naming_the_field(make_gateway: MakeGateway, path, body, param):
    gw = make_gateway(MOCK)
    response = await gw.http.post(path, json=body, headers={"x-api-key": CLIENT_KEY})
    assert response.status_code == 400
    payload = response.json()
    if path == "/v1/messages":
        assert payload["error"]["type"] == "invalid_request_error"
        assert param in payload["error"]["message"]
    else:
        assert payload["error"]["param"] == param


async def test_malformed_json_is_400(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    response = await gw.http.post(
        "/v1/chat/completions", content=b"{not json", headers={"x-api-key": CLIENT_KEY}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_model_is_404_model_not_found(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    with pytest.raises(openai.NotFoundError) as oai:
        await gw.openai().chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert oai.value.body["code"] == "model_not_found"
    assert oai.value.body["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError) as ant:
        await gw.anthropic().messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert ant.value.body["error"]["type"] == "not_found_error"


async def test_body_over_max_body_is_413(make_gateway: MakeGateway):
    gw = make_gateway("server: {max_body: 1KiB}\n" + MOCK)
    with pytest.raises(openai.APIStatusError) as error:
        await gw.openai().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert error.value.status_code == 413


async def test_route_rejection_uses_its_status_and_message(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    with pytest.raises(openai.PermissionDeniedError) as error:
        await gw.openai().embeddings.create(model="blocked-model", input="x")
    assert "free tier" in error.value.message
    assert error.value.response.headers["x-concord-route"] == "no-free-embeddings"


async def test_route_params_set_and_cap_body_values(make_gateway: MakeGateway, upstream):
    gw = make_gateway(
        f"""
        providers:
          up: {{type: openai, base_url: "{upstream.openai_url}", api_keys: [k]}}
        models:
          gpt-4o: {{targets: [up/gpt-4o]}}
        routes:
          - name: capped
            use: $requested
            params: {{set: {{temperature: 0}}, max: {{max_tokens: 5}}}}
        """
    )
    await gw.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], max_tokens=500, temperature=1.5
    )
    sent = upstream.requests[-1].json
    assert (sent["temperature"], sent["max_tokens"]) == (0, 5)


async def test_503_when_no_concurrency_slot_frees_in_time(make_gateway: MakeGateway):
    gw = make_gateway("server: {max_concurrency: 1, queue_timeout: 50ms}\n" + MOCK)
    client = gw.openai()

    async def ask():
        return await client.chat.completions.create(
            model="slow-model", messages=[{"role": "user", "content": "x"}]
        )

    first = asyncio.ensure_future(ask())
    await asyncio.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as error:
        await ask()
    assert error.value.status_code == 503
    assert (await first).choices[0].message.content == "Echo: x"


async def test_health_endpoints(make_gateway: MakeGateway):
    gw = make_gateway(MOCK)
    for path in ("/healthz", "/_health", "/health"):
        assert (await gw.http.get(path)).status_code == 200


async def test_cors_origins_see_the_gateway_answers(make_gateway: MakeGateway):
    gw = make_gateway('server: {cors_origins: ["https://app.example"]}\n' + MOCK)
    origin = {"origin": "https://app.example"}
    preflight = await gw.http.options(
        "/v1/chat/completions",
        headers={**origin, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    answer = await gw.http.post(
        "/v1/chat/completions",
        headers={**origin, "authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    exposed = {h.strip() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"x-concord-model", "x-concord-cache", "x-concord-attempts", "retry-after"} <= exposed
    assert answer.headers["x-concord-config"] == gw.state.graph.version


async def test_an_image_in_a_tool_result_counts_for_the_images_condition(
    make_gateway: MakeGateway,
) -> None:
    """SPEC §2.4.1 `images`: a computer-use screenshot arrives as a tool's result, and a route
    for vision traffic must see it there as it sees an image the user sent."""
    gw = make_gateway(
        MOCK
        + """
  - name: vision
    when: {images: true}
    reject: {status: 403, message: "images go elsewhere"}
"""
    )
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    screenshot = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "image", "source": png}],
    }
    messages = [
        {"role": "user", "content": "Open the settings"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}],
        },
        {"role": "user", "content": [screenshot]},
    ]
    with pytest.raises(anthropic.PermissionDeniedError, match="images go elsewhere"):
        await gw.anthropic().messages.create(
            model="claude-sonnet", max_tokens=50, messages=messages
        )
    text_only = [*messages[:2], {"role": "user", "content": [{**screenshot, "content": "ok"}]}]
    answer = await gw.anthropic().messages.create(
        model="claude-sonnet", max_tokens=50, messages=text_only
    )
    assert answer.content
