"""SPEC §2.8 and §5 across real processes: keys issued through the admin API or the CLI work with
the official SDKs on every process sharing the database, and stop working within a second of
their revocation anywhere."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anthropic
import openai
import pytest

from tests.e2e_records.conftest import CONCORD, DECLARED_KEY, Deployment, Gateway

pytestmark = pytest.mark.slow


def openai_client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


def anthropic_client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=10)


def chat(gateway: Gateway, key: str) -> str:
    completion = openai_client(gateway, key).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "hello"}]
    )
    return completion.choices[0].message.content or ""


def message(gateway: Gateway, key: str) -> str:
    reply = anthropic_client(gateway, key).messages.create(
        model="claude", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
    )
    return reply.content[0].text  # type: ignore[union-attr]


def test_key_created_on_one_process_works_on_another_until_revoked(
    deploy: Callable[..., Deployment], database_url: str
) -> None:
    deployment = deploy(database_url)
    a, b = deployment.start(), deployment.start()
    issued = a.create_key("acme", "ci-bot")
    assert issued["key"].startswith("ck-") and len(issued["key"]) == 43

    assert chat(b, issued["key"]) == "Echo: hello"  # OpenAI SDK: Authorization: Bearer
    assert message(b, issued["key"]) == "Echo: hello"  # Anthropic SDK: x-api-key

    revoked = a.admin.delete(f"/_admin/keys/{issued['id']}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    revoked_at = time.monotonic()
    while True:  # SPEC §5: the key stops working within one second, on every process
        try:
            chat(b, issued["key"])
        except openai.AuthenticationError as exc:
            assert exc.code == "invalid_api_key"
            break
        assert time.monotonic() - revoked_at < 1.0, "revoked key still accepted after 1 s"
        time.sleep(0.02)
    with pytest.raises(anthropic.AuthenticationError):
        message(b, issued["key"])
    listed = a.admin.get("/_admin/keys", params={"workspace": "acme"}).json()["data"]
    assert [(k["id"], k["status"]) for k in listed] == [(issued["id"], "revoked")]
    assert issued["key"] not in json.dumps(listed)  # never the key, never its hash


def test_cli_issued_key_works_on_a_running_gateway(
    deploy: Callable[..., Deployment], database_url: str
) -> None:
    deployment = deploy(database_url)
    gateway = deployment.start()
    created = subprocess.run(
        [CONCORD, "keys", "create", "-c", str(deployment.config), "--workspace", "acme",
         "--name", "from-cli", "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    key = json.loads(created.stdout)["key"]
    assert chat(gateway, key) == "Echo: hello"
    assert message(gateway, key) == "Echo: hello"


def test_expired_unknown_and_declared_keys(
    deploy: Callable[..., Deployment], database_url: str
) -> None:
    deployment = deploy(database_url)
    gateway = deployment.start()
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    expiring = gateway.create_key("acme", "short-lived", expires_at=soon.isoformat())
    assert chat(gateway, expiring["key"]) == "Echo: hello"
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    with pytest.raises(openai.AuthenticationError) as expired:
        chat(gateway, expiring["key"])
    assert expired.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, "ck-" + "x" * 40)
    # SPEC §2.8: keys declared in the config keep working next to the database's
    assert chat(gateway, DECLARED_KEY) == "Echo: hello"
