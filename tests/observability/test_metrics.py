"""SPEC §7: /metrics after real traffic through the assembled app."""

from __future__ import annotations

import pytest

from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.observability.conftest import Start, value

CATALOG = """\
defaults:
  retry: {attempts: 2, backoff: {initial: 1ms, max: 1ms}}
  circuit_breaker: {failures: 2, cooldown: 10m}
models:
  gpt-4o:
    targets: [up/gpt-4o]
    price: {input: 2.0, output: 10.0, cached_input: 1.0}
  fragile:
    targets: [up/fragile]
    fallbacks: [gpt-4o]
"""


async def test_requests_tokens_and_cost_match_the_traffic(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG)
    usage = Usage(input_tokens=1000, output_tokens=200, cached_tokens=400)
    upstream.script("gpt-4o", [Fault(usage=usage)] * 3)
    for _ in range(3):
        assert (await gw.chat()).status_code == 200
    samples = await gw.metrics()

    labels = {"route": "none", "model": "gpt-4o", "provider": "up", "status": "200"}
    assert value(samples, "concord_requests_total", **labels) == 3
    tokens = {"workspace": "acme", "model": "gpt-4o"}
    assert value(samples, "concord_tokens_total", kind="input", **tokens) == 3000
    assert value(samples, "concord_tokens_total", kind="output", **tokens) == 600
    assert value(samples, "concord_tokens_total", kind="cached", **tokens) == 1200
    # per request: 600 uncached input at $2/M + 400 cached at $1/M + 200 output at $10/M
    per_request = (600 * 2.0 + 400 * 1.0 + 200 * 10.0) / 1e6
    assert value(samples, "concord_cost_usd_total", **tokens) == pytest.approx(3 * per_request)
    latency = {"route": "none", "model": "gpt-4o"}
    assert value(samples, "concord_request_duration_seconds_count", **latency) == 3
    upstream_labels = {"provider": "up", "target": "up/gpt-4o"}
    assert value(samples, "concord_upstream_duration_seconds_count", **upstream_labels) == 3
    assert value(samples, "concord_config_info", version=gw.state.graph.version) == 1


async def test_a_target_whose_streams_break_is_judged_failing(
    start: Start, upstream: FakeUpstream
) -> None:
    """A stream that breaks after its first event counts against its target: the upstream call
    is an error in the metrics and health, and enough of them open the circuit."""
    gw = await start(CATALOG)
    upstream.script("gpt-4o", [Fault(drop_after=1)] * 2)
    for _ in range(2):
        response = await gw.chat(stream=True, content="one two three four")
        assert response.status_code == 200 and "The upstream stream failed" in response.text
    samples = await gw.metrics()
    target = {"provider": "up", "target": "up/gpt-4o"}
    assert value(samples, "concord_upstream_requests_total", result="error", **target) == 2
    assert value(samples, "concord_upstream_requests_total", result="ok", **target) == 0
    assert value(samples, "concord_circuit_state", target="up/gpt-4o") == 2  # failures: 2
    assert gw.state.runtime.breakers.state("up/gpt-4o") == "open"


async def test_a_stream_that_ends_well_closes_a_half_counted_circuit(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG)
    upstream.script("gpt-4o", [Fault(drop_after=1)])
    assert "The upstream stream failed" in (await gw.chat(stream=True, content="a b c")).text
    assert (await gw.chat(stream=True)).status_code == 200  # a whole stream: failures reset
    upstream.script("gpt-4o", [Fault(drop_after=1)])
    assert "The upstream stream failed" in (await gw.chat(stream=True, content="a b c")).text
    assert gw.state.runtime.breakers.state("up/gpt-4o") == "closed"


async def test_streams_observe_time_to_first_token(start: Start) -> None:
    gw = await start(CATALOG)
    response = await gw.chat(stream=True)
    assert response.status_code == 200
    samples = await gw.metrics()
    ttft = {"model": "gpt-4o", "provider": "up"}
    assert value(samples, "concord_time_to_first_token_seconds_count", **ttft) == 1


async def test_retries_fallbacks_and_open_circuits_are_counted(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG)
    upstream.script("fragile", [Fault(status=503), Fault(status=503)])
    response = await gw.chat(model="fragile")
    assert response.status_code == 200
    assert response.headers["x-concord-model"] == "gpt-4o"
    samples = await gw.metrics()

    assert value(samples, "concord_retries_total", target="up/fragile") == 1
    moves = {"from_model": "fragile", "to_model": "gpt-4o"}
    assert value(samples, "concord_fallbacks_total", **moves) == 1
    assert value(samples, "concord_circuit_state", target="up/fragile") == 2  # open
    assert value(samples, "concord_circuit_state", target="up/gpt-4o") == 0
    failed = {"provider": "up", "target": "up/fragile", "result": "error"}
    assert value(samples, "concord_upstream_requests_total", **failed) == 2
    served = {"route": "none", "model": "gpt-4o", "provider": "up", "status": "200"}
    assert value(samples, "concord_requests_total", **served) == 1

    # the circuit is open now: the next request goes straight to the fallback, a move too
    assert (await gw.chat(model="fragile")).headers["x-concord-model"] == "gpt-4o"
    samples = await gw.metrics()
    assert value(samples, "concord_fallbacks_total", **moves) == 2
    assert value(samples, "concord_upstream_requests_total", **failed) == 2


async def test_errors_are_counted_without_unbounded_labels(start: Start) -> None:
    gw = await start(CATALOG)
    assert (await gw.chat(key="ck-wrong")).status_code == 401
    assert (await gw.chat(model="made-up-model-123")).status_code == 404
    response = await gw.http.get("/metrics")
    assert "made-up-model-123" not in response.text  # client-chosen names never become labels
    samples = await gw.metrics()
    unrouted = {"route": "none", "model": "none", "provider": "none"}
    assert value(samples, "concord_requests_total", status="401", **unrouted) == 1
    assert value(samples, "concord_requests_total", status="404", **unrouted) == 1


async def test_a_retry_an_open_circuit_stops_is_not_counted(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG.replace("failures: 2", "failures: 1"))
    upstream.script("fragile", [Fault(status=503)])
    response = await gw.chat(model="fragile")  # opens at once: the retry never happens
    assert response.status_code == 200 and response.headers["x-concord-model"] == "gpt-4o"
    samples = await gw.metrics()
    failed = {"provider": "up", "target": "up/fragile", "result": "error"}
    assert value(samples, "concord_upstream_requests_total", **failed) == 1
    assert value(samples, "concord_retries_total", target="up/fragile") == 0


async def test_a_request_that_fails_after_routing_counts_against_its_model(
    start: Start, upstream: FakeUpstream
) -> None:
    """Per-model error rates: the upstream failed, but the request was routed to gpt-4o."""
    gw = await start(CATALOG)
    upstream.script("gpt-4o", [Fault(status=500)] * 3)
    response = await gw.chat()
    assert response.status_code == 502 and response.headers["x-concord-model"] == "gpt-4o"
    samples = await gw.metrics()
    failed = {"route": "none", "model": "gpt-4o", "provider": "none", "status": "502"}
    assert value(samples, "concord_requests_total", **failed) == 1


async def test_config_reloads_are_counted_by_result(start: Start) -> None:
    gw = await start(CATALOG)
    gw.path.write_text(gw.path.read_text() + "\nnot: [valid\n", encoding="utf-8")
    response = await gw.admin("POST", "/_admin/config/reload")
    assert response.status_code == 422
    samples = await gw.metrics()
    assert value(samples, "concord_config_reload_total", result="error") == 1
    assert value(samples, "concord_config_reload_total", result="ok") == 0


async def test_cache_hits_and_misses_are_counted_and_bypasses_are_not(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG)
    assert (await gw.chat(temperature=0)).headers["x-concord-cache"] == "miss"
    assert (await gw.chat(temperature=0)).headers["x-concord-cache"] == "hit"
    assert (await gw.chat(temperature=0.7)).headers["x-concord-cache"] == "bypass"
    samples = await gw.metrics()
    assert value(samples, "concord_cache_misses_total", model="gpt-4o") == 1
    assert value(samples, "concord_cache_hits_total", model="gpt-4o") == 1
