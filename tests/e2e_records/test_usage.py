"""SPEC §1, §2.6, §5: every request served through the SDKs lands in the usage log with the
upstream's token counts (cached tokens included) and the cost at catalog prices, and the admin API
reports it by window and group."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import openai
import pytest

from concord.translate.usage import Usage
from tests.e2e_records.conftest import (
    CLAUDE_PRICE,
    GPT_PRICE,
    Deployment,
    cost,
    usage_rows,
)
from tests.fakes.upstream import FakeUpstream, Fault

pytestmark = pytest.mark.slow

GPT_USAGE = Usage(input_tokens=1200, output_tokens=300, cached_tokens=200)
CLAUDE_USAGE = Usage(input_tokens=800, output_tokens=100, cached_tokens=500)


def test_usage_totals_match_the_upstream_token_for_token(
    deploy: Callable[..., Deployment], database_url: str, upstream: FakeUpstream
) -> None:
    upstream.script("gpt-up", [Fault(usage=GPT_USAGE)] * 3)
    upstream.script("claude-up", [Fault(usage=CLAUDE_USAGE)] * 2)
    deployment = deploy(database_url)
    gateway = deployment.start()
    assert gateway.admin.post("/_admin/workspaces", json={"name": "beta"}).status_code == 201
    acme_key = gateway.create_key("acme", "acme-app")
    beta_key = gateway.create_key("beta", "beta-app")
    before = datetime.now(UTC)

    oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key=acme_key["key"], max_retries=0)
    question = [{"role": "user", "content": "how much?"}]
    for _ in range(2):
        oai.chat.completions.create(model="gpt", messages=question)  # type: ignore[arg-type]
    stream = oai.chat.completions.create(
        model="gpt",
        messages=question,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    assert next(c.usage for c in stream if c.usage).prompt_tokens == 1200  # type: ignore[union-attr]
    ant = anthropic.Anthropic(base_url=gateway.url, api_key=beta_key["key"], max_retries=0)
    ant.messages.create(model="claude", max_tokens=64, messages=question)  # type: ignore[arg-type]
    beta_oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key=beta_key["key"], max_retries=0)
    beta_oai.chat.completions.create(model="claude", messages=question)  # type: ignore[arg-type]

    acme = {"requests": 3, "input_tokens": 3600, "output_tokens": 900, "cached_tokens": 600}
    beta = {"requests": 2, "input_tokens": 1600, "output_tokens": 200, "cached_tokens": 1000}
    acme_cost = 3 * cost(GPT_PRICE, 1200, 300, 200)
    beta_cost = 2 * cost(CLAUDE_PRICE, 800, 100, 500)
    grouped = gateway.usage(group_by="workspace,key,model", last_hours=1)
    by_group = {(r["workspace"], r["key"], r["model"]): r for r in grouped}
    assert set(by_group) == {("acme", "acme-app", "gpt"), ("beta", "beta-app", "claude")}
    acme_row = by_group["acme", "acme-app", "gpt"]
    beta_row = by_group["beta", "beta-app", "claude"]
    assert {k: acme_row[k] for k in acme} == acme
    assert {k: beta_row[k] for k in beta} == beta
    assert acme_row["cost_usd"] == pytest.approx(acme_cost, rel=1e-9)
    assert beta_row["cost_usd"] == pytest.approx(beta_cost, rel=1e-9)

    by_model = {r["model"]: r["requests"] for r in gateway.usage(group_by="model")}
    assert by_model == {"gpt": 3, "claude": 2}
    by_workspace = gateway.usage(group_by="workspace")
    assert [r["workspace"] for r in by_workspace] == ["acme", "beta"]  # costliest first

    # windows: [start, end) in UTC
    assert gateway.usage(end=before.isoformat()) == []
    future = datetime.now(UTC) + timedelta(hours=1)
    assert (
        gateway.usage(start=future.isoformat(), end=(future + timedelta(hours=1)).isoformat()) == []
    )
    (total,) = gateway.usage(start=before.isoformat())
    assert total["requests"] == 5
    assert total["cost_usd"] == pytest.approx(acme_cost + beta_cost, rel=1e-9)

    today = gateway.admin.get("/_stats/today").json()  # SPEC §3.1: V0's shape
    assert today == {
        "requests": 5,
        "cost_usd": pytest.approx(acme_cost + beta_cost, rel=1e-9),
        "input_tokens": 5200,
        "output_tokens": 1100,
    }
    # every record names the key by id too, as admin lists do
    rows = usage_rows(database_url, deployment.config.parent)
    assert {r["key_id"] for r in rows} == {acme_key["id"], beta_key["id"]}


def test_admin_usage_needs_the_admin_key(deploy: Callable[..., Deployment]) -> None:
    gateway = deploy("sqlite:///concord.db").start()
    assert httpx.get(gateway.url + "/_admin/usage").status_code == 401
    wrong = {"authorization": "Bearer adm-wrong"}
    assert httpx.get(gateway.url + "/_stats/today", headers=wrong).status_code == 401
    assert gateway.admin.get("/_admin/usage", params={"group_by": "colour"}).status_code == 400
