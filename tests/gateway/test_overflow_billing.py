"""A context-overflow summary is billed even when the reshaped request then fails (SPEC §2.5.1,
§2.6 spend from usage): the summary call was made and paid for upstream, so the usage log, the
key's usage and the budgets must carry its tokens and its cost at the summarizing model's price."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from starlette.applications import Starlette

from concord.gateway.app import GatewayState, create_app
from concord.gateway.guards import StateGuards
from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import CLIENT_KEY, CLIENT_KEY_SHA

ADMIN_KEY = "adm-" + "o" * 40
# USD per 1M tokens: $0.001 per input token, $0.004 per output token on `small`
SMALL_PRICE = {"input": 1000, "output": 4000}
OTHER_PRICE = {"input": 10, "output": 20}
SUMMARY = Usage(300, 10)  # what the summary call reports
SUMMARY_COST = (300 * 1000 + 10 * 4000) / 1e6
CONVERSATION = [
    {"role": "user", "content": "We met in Oslo " * 200},
    {"role": "assistant", "content": "noted"},
    {"role": "user", "content": "where did we meet?"},
]


@dataclass
class Running:
    """The whole app, lifespan running: usage goes to its database, budgets to memory state."""

    app: Starlette
    state: GatewayState
    http: httpx.AsyncClient

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=CLIENT_KEY, base_url="http://gw/v1", http_client=self.http, max_retries=0
        )

    def anthropic(self) -> anthropic.AsyncAnthropic:
        client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app))
        return anthropic.AsyncAnthropic(
            api_key=CLIENT_KEY, base_url="http://gw", http_client=client, max_retries=0
        )

    async def usage_by_key(self) -> dict[str, Any]:
        """The test key's row of `GET /_admin/usage`, grouped by key."""
        response = await self.http.get(
            "/_admin/usage",
            params={"group_by": "key", "last_hours": "1"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert response.status_code == 200, response.text
        rows = {row["key"]: row for row in response.json()["data"]}
        return rows["test-key"]  # type: ignore[no-any-return]

    async def spent(self, budget: str, ident: str) -> float:
        guards = self.state.guards
        assert isinstance(guards, StateGuards)
        rule = next(rule for rule in self.state.graph.budgets if rule.name == budget)
        return await guards.keeper.spent(rule, ident)


def config(up: FakeUpstream, database: str) -> str:
    """Every model summarizes on overflow; `lone` falls back to `other`, `duo` has two targets;
    one try per target."""
    return textwrap.dedent(
        f"""\
        version: 1
        storage: {{database: "{database}", state: memory}}
        auth:
          mode: keys
          admin_key: "{ADMIN_KEY}"
          keys:
            - {{name: test-key, sha256: {CLIENT_KEY_SHA}, workspace: acme}}
        workspaces:
          acme: {{}}
        providers:
          a: {{type: openai, base_url: "{up.openai_url}", api_keys: [ka]}}
          b: {{type: openai, base_url: "{up.openai_url}", api_keys: [kb]}}
        models:
          small:
            targets: [a/small-model]
            context_window: 1000
            price: {SMALL_PRICE}
          lone:
            targets: [a/lone-model]
            fallbacks: [other]
            context_window: 1000
            price: {SMALL_PRICE}
          other: {{targets: [b/other-model], context_window: 1000, price: {OTHER_PRICE}}}
          duo:
            targets: [a/duo-first, b/duo-second]
            context_window: 1000
            price: {SMALL_PRICE}
        budgets:
          - {{name: per-key, scope: key, limit_usd: 100, period: day}}
        defaults:
          timeout: 300ms
          retry: {{attempts: 1}}
          context_overflow: summarize
        """
    )


@pytest.fixture
async def running(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "concord.yaml"
    path.write_text(config(upstream, f"sqlite:///{tmp_path / 'concord.db'}"), encoding="utf-8")
    app = create_app(str(path), env={})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        )
        yield Running(app, app.state.gateway, http)


def summarized_then(failure: Fault) -> list[Fault]:
    """Refused for length, the summary answers with SUMMARY, the reshaped retry gets `failure`."""
    return [Fault(context_length=True), Fault(reply="They met in Oslo.", usage=SUMMARY), failure]


@pytest.mark.parametrize(
    ("failure", "status", "kind", "code"),
    [
        (Fault(status=500), 502, "server_error", "upstream_error"),
        (Fault(delay=1.0), 502, "server_error", "upstream_error"),  # past the 300ms timeout
        (Fault(status=400, message="bad temperature"), 400, "invalid_request_error", None),
    ],
    ids=["upstream-500", "timeout", "client-error"],
)
async def test_a_failed_retry_after_a_summary_still_bills_the_summary(
    running: Running,
    upstream: FakeUpstream,
    failure: Fault,
    status: int,
    kind: str,
    code: str | None,
) -> None:
    upstream.script("small-model", summarized_then(failure))
    with pytest.raises(openai.APIStatusError) as raised:
        await running.openai().chat.completions.create(model="small", messages=CONVERSATION)  # type: ignore[arg-type]
    error = raised.value
    assert error.status_code == status
    assert (error.type, error.code) == (kind, code)
    assert error.response.headers["x-concord-attempts"] == "3"
    assert [r.model for r in upstream.requests] == ["small-model"] * 3
    await assert_billed(running, status)


async def test_an_anthropic_client_gets_its_error_and_the_summary_is_billed(
    running: Running, upstream: FakeUpstream
) -> None:
    upstream.script("small-model", summarized_then(Fault(status=500)))
    with pytest.raises(anthropic.APIStatusError) as raised:
        await running.anthropic().messages.create(
            model="small",
            max_tokens=50,
            messages=CONVERSATION,  # type: ignore[arg-type]
        )
    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    await assert_billed(running, 502)


async def test_summaries_of_every_failed_model_are_billed_at_their_own_price(
    running: Running, upstream: FakeUpstream
) -> None:
    other_summary = Usage(200, 20)
    upstream.script("lone-model", summarized_then(Fault(status=500)))
    upstream.script(
        "other-model",
        [Fault(context_length=True), Fault(reply="Oslo.", usage=other_summary), Fault(status=503)],
    )
    with pytest.raises(openai.APIStatusError) as raised:
        await running.openai().chat.completions.create(model="lone", messages=CONVERSATION)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    assert raised.value.response.headers["x-concord-attempts"] == "6"
    row = await running.usage_by_key()
    assert (row["input_tokens"], row["output_tokens"]) == (500, 30)
    cost = SUMMARY_COST + (200 * 10 + 20 * 20) / 1e6
    assert row["cost_usd"] == pytest.approx(cost)
    assert await running.spent("per-key", "test-key") == pytest.approx(cost)


@pytest.mark.parametrize(
    ("model", "summarizer", "answerer", "cost"),
    [
        # one model, one price: the summary and the answer together
        ("duo", "duo-first", "duo-second", (340 * 1000 + 15 * 4000) / 1e6),
        # a fallback to another model: each call at its own model's price
        ("lone", "lone-model", "other-model", SUMMARY_COST + (40 * 10 + 5 * 20) / 1e6),
    ],
    ids=["same-model", "fallback-model"],
)
async def test_a_summary_by_a_target_that_then_failed_is_billed_with_the_answer(
    running: Running,
    upstream: FakeUpstream,
    model: str,
    summarizer: str,
    answerer: str,
    cost: float,
) -> None:
    upstream.script(summarizer, summarized_then(Fault(status=500)))
    upstream.script(answerer, [Fault(usage=Usage(40, 5))])
    raw = await running.openai().chat.completions.with_raw_response.create(
        model=model,
        messages=CONVERSATION,  # type: ignore[arg-type]
    )
    assert raw.status_code == 200 and raw.headers["x-concord-attempts"] == "4"
    row = await running.usage_by_key()
    assert (row["input_tokens"], row["output_tokens"]) == (340, 15)
    assert row["cost_usd"] == pytest.approx(cost)
    assert await running.spent("per-key", "test-key") == pytest.approx(cost)


async def assert_billed(gw: Running, status: int) -> None:
    """The one usage row carries the summary's tokens and cost; the key's budget was charged."""
    row = await gw.usage_by_key()
    assert row["requests"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (300, 10)
    assert row["cost_usd"] == pytest.approx(SUMMARY_COST)
    assert await gw.spent("per-key", "test-key") == pytest.approx(SUMMARY_COST)


async def test_a_client_error_from_a_later_target_counts_every_call_made(
    running: Running, upstream: FakeUpstream
) -> None:
    upstream.script("duo-first", [Fault(status=500)])
    upstream.script("duo-second", [Fault(status=400, message="bad temperature")])
    with pytest.raises(openai.BadRequestError) as raised:
        await running.openai().chat.completions.create(
            model="duo", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.response.headers["x-concord-attempts"] == "2"
