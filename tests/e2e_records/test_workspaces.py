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


def test_a_conditional_budget_is_rebuilt_from_the_rows_charged_to_it(
    deploy: Callable[..., Deployment], database_url: str, upstream: FakeUpstream
) -> None:
    """A `budgets[]` rule with a `when` counts, after a restart, exactly the requests it matched:
    the claude calls of the same key cost more than the whole budget and must not count."""
    upstream.script("gpt-up", [Fault(usage=PRICED)] * 10)
    upstream.script("claude-up", [Fault(usage=PRICED)] * 10)  # $0.009 each
    extra = """
        budgets:
          - {name: gpt_spend, scope: key, limit_usd: 0.01, period: day, when: {model: gpt}}
        """
    deployment = deploy(database_url, extra)
    first = deployment.start()
    assert ask_as(first, DECLARED_KEY).status_code == 200  # $0.006 of $0.01
    assert [ask_as(first, DECLARED_KEY, "claude").status_code for _ in range(2)] == [200, 200]
    first.terminate()

    second = deployment.start()  # memory state starts empty: spend comes from the usage log
    assert ask_as(second, DECLARED_KEY).status_code == 200  # $0.006 rebuilt: room for one more
    refused = ask_as(second, DECLARED_KEY)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert ask_as(second, DECLARED_KEY, "claude").status_code == 200  # not this budget's


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


def ask_as(gateway: Gateway, key: str, model: str = "gpt") -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def test_an_api_workspace_budget_blocks_and_survives_a_restart(
    deploy: Callable[..., Deployment], database_url: str, upstream: FakeUpstream
) -> None:
    upstream.script("gpt-up", [Fault(usage=PRICED)] * 10)
    deployment = deploy(database_url)
    first = deployment.start()
    budget = {"limit_usd": 0.01, "period": "day", "on_exceed": "block"}
    created = first.admin.post("/_admin/workspaces", json={"name": "team", "budget": budget})
    assert created.status_code == 201, created.text
    key = first.create_key("team", "ci")["key"]  # used at once: no refresh interval to wait for
    assert [ask_as(first, key).status_code for _ in range(2)] == [200, 200]  # $0.012 spent
    exhausted = ask_as(first, key)
    assert exhausted.status_code == 429, exhausted.text
    assert exhausted.json()["error"]["code"] == "budget_exceeded"
    assert ask(first).status_code == 200  # the declared workspace `acme` has its own budget
    first.terminate()

    second = deployment.start()  # memory state: the API workspace's spend comes from the log
    again = ask_as(second, key)
    assert again.status_code == 429, again.text
    assert again.json()["error"]["code"] == "budget_exceeded"


def test_a_v0_workspace_downgrades_to_the_cheapest_model(
    deploy: Callable[..., Deployment], upstream: FakeUpstream
) -> None:
    # claude: 1000 x $3/M + 400 x $15/M = $0.009 per request; gpt is the cheaper catalog model
    upstream.script("claude-up", [Fault(usage=PRICED)] * 10)
    gateway = deploy("sqlite:///concord.db").start()
    v0 = {"name": "demo", "monthly_budget_usd": 0.01, "action_on_exceed": "downgrade"}
    assert gateway.admin.post("/_admin/workspaces", json=v0).status_code == 201
    issued = gateway.admin.post("/_admin/keys/demo")
    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    served = [ask_as(gateway, key, "claude") for _ in range(3)]
    assert [r.status_code for r in served] == [200, 200, 200]
    assert [r.headers.get("x-concord-downgraded") for r in served] == [None, None, "claude"]
    assert served[2].headers["x-concord-model"] == "gpt"


def test_a_downgrade_target_outside_the_catalog_is_refused(
    deploy: Callable[..., Deployment],
) -> None:
    gateway = deploy("sqlite:///concord.db").start()
    budget = {"limit_usd": 5, "on_exceed": "downgrade", "downgrade_to": "gtp"}
    refused = gateway.admin.post("/_admin/workspaces", json={"name": "x", "budget": budget})
    assert refused.status_code == 400
    assert "'gtp' is not a catalog model (known: claude, gpt)" in refused.text
    assert [w["name"] for w in gateway.admin.get("/_admin/workspaces").json()["data"]] == ["acme"]
