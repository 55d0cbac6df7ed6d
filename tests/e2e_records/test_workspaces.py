"""SPEC §2.6: declared workspaces are synced into the database at load and at every reload, and
with the memory state backend a budget's spend is rebuilt from the usage log at start-up."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from concord.translate.usage import Usage
from tests.e2e_records.conftest import DECLARED_KEY, Deployment, Gateway
from tests.fakes.upstream import FakeUpstream, Fault

pytestmark = pytest.mark.slow

# 1000 input tokens at $2/M + 400 output tokens at $10/M = $0.006 per request
PRICED = Usage(input_tokens=1000, output_tokens=400)
BUDGET = "{tags: [paid], budget: {limit_usd: 0.01, period: day, on_exceed: block}}"


def ask(gateway: Gateway) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {DECLARED_KEY}"},
        json={"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def test_budget_spend_survives_a_restart(
    deploy: Callable[..., Deployment], database_url: str, upstream: FakeUpstream
) -> None:
    upstream.script("gpt-up", [Fault(usage=PRICED)] * 10)
    deployment = deploy(database_url, acme=BUDGET)
    first = deployment.start()
    assert [ask(first).status_code for _ in range(2)] == [200, 200]  # $0.012 of $0.01 spent
    exhausted = ask(first)
    assert exhausted.status_code == 429
    assert exhausted.json()["error"]["code"] == "budget_exceeded"
    first.terminate()

    second = deployment.start()  # memory state starts empty: spend comes from the usage log
    again = ask(second)
    assert again.status_code == 429, again.text
    assert again.json()["error"]["code"] == "budget_exceeded"
    (acme,) = [w for w in second.admin.get("/_admin/workspaces").json()["data"]]
    assert acme["spend_usd"] == pytest.approx(0.012)


def test_declared_workspaces_follow_the_config_on_reload(
    deploy: Callable[..., Deployment],
) -> None:
    deployment = deploy("sqlite:///concord.db")
    gateway = deployment.start()
    assert gateway.admin.post("/_admin/workspaces", json={"name": "by-api"}).status_code == 201

    def listed() -> dict[str, str]:
        data = gateway.admin.get("/_admin/workspaces").json()["data"]
        return {w["name"]: w["source"] for w in data}

    assert listed() == {"acme": "config", "by-api": "api"}
    text = deployment.config.read_text()
    deployment.config.write_text(text.replace("  acme: {tags: [paid]}", "  zeta: {tags: [new]}"))
    reload = gateway.admin.post("/_admin/config/reload")
    assert reload.status_code == 200, reload.text
    deadline = time.monotonic() + 3  # the sync runs right after the swap, off the request
    while listed() != {"zeta": "config", "by-api": "api"} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listed() == {"zeta": "config", "by-api": "api"}
