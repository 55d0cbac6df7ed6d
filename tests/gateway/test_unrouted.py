"""Requests no route takes get JSON errors in the client's wire format (SPEC §3), and admin paths
reveal nothing to a caller without the admin key (SPEC §2.8)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.gateway.conftest import CLIENT_KEY_SHA, MakeGateway

MODELS = """\
providers:
  demo: {type: mock}
models:
  gpt-4o-mini: {targets: [demo/gpt-4o-mini]}
"""
ADMIN_KEY = "adm-" + "z" * 40


def keys_auth(admin: bool) -> str:
    lines = ["auth:", "  mode: keys"]
    if admin:
        lines.append(f'  admin_key: "{ADMIN_KEY}"')
    lines += ["  keys:", f"    - {{name: test-key, sha256: {CLIENT_KEY_SHA}, workspace: acme}}"]
    return "\n".join(lines) + "\n"


async def test_an_openai_client_calling_an_endpoint_concord_lacks_gets_a_readable_404(
    make_gateway: MakeGateway,
) -> None:
    gw = make_gateway(MODELS)
    with pytest.raises(openai.NotFoundError) as raised:
        await gw.openai().images.generate(prompt="a cat")
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"] == "Invalid URL (POST /v1/images/generations)"
    assert (body["type"], body["code"]) == ("invalid_request_error", "unknown_url")


async def test_an_anthropic_client_gets_its_own_error_shape(make_gateway: MakeGateway) -> None:
    gw = make_gateway(MODELS)
    with pytest.raises(anthropic.NotFoundError) as raised:
        await gw.anthropic().messages.count_tokens(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "Invalid URL (POST /v1/messages/count_tokens)",
        },
    }


async def test_a_wrong_method_is_a_json_405_naming_the_right_one(make_gateway: MakeGateway) -> None:
    gw = make_gateway(MODELS)
    response = await gw.http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["message"] == (
        "GET is not allowed on /v1/chat/completions: use POST"
    )
    assert response.headers["x-concord-config"] == gw.state.graph.version


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_admin/no-such-thing"),
        ("GET", "/_admin/config/reload"),  # a real path, the wrong method
        ("POST", "/_stats/today"),
        ("GET", "/_admin/workspaces"),
    ],
)
async def test_without_an_admin_key_every_admin_path_answers_the_same_404(
    make_gateway: MakeGateway, method: str, path: str
) -> None:
    gw = make_gateway(MODELS, auth=keys_auth(admin=False))
    response = await gw.http.request(method, path)
    assert response.status_code == 404
    assert response.json() == {
        "error": {"message": "Not Found", "type": "not_found_error", "code": "not_found"}
    }


async def test_admin_wrong_method_needs_the_admin_key_before_it_says_so(
    make_gateway: MakeGateway,
) -> None:
    gw = make_gateway(MODELS, auth=keys_auth(admin=True))
    anonymous = await gw.http.get("/_admin/config/reload")
    assert anonymous.status_code == 401
    admin = await gw.http.get(
        "/_admin/config/reload", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert admin.status_code == 405
    assert admin.headers["allow"] == "POST"
    assert admin.json()["error"]["code"] == "method_not_allowed"
