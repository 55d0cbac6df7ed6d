"""SPEC §7: one process counts its per-request families itself; a scrape must not tell."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from concord.observability.metrics import (
    COST,
    LATENCY_BUCKETS,
    REQUEST_FAMILIES,
    REQUEST_LATENCY,
    REQUESTS,
    _shared,
)
from concord.observability.tallies import Tallies, count, observe


def test_tallies_expose_what_prometheus_client_metrics_would() -> None:
    reference = CollectorRegistry()
    metrics = {family.name: _shared(family, reference) for family in REQUEST_FAMILIES}
    registry = CollectorRegistry(auto_describe=True)
    tallies = Tallies(REQUEST_FAMILIES)
    registry.register(tallies)
    # on a bucket bound (inclusive), between bounds, below the first and above the last
    for seconds in (0.001, 0.025, 0.03, 1.0, 400.0, 0.1):
        metrics[REQUEST_LATENCY.name].labels("chat", "gpt-4o").observe(seconds)
        observe(tallies.tables[REQUEST_LATENCY.name], ("chat", "gpt-4o"), LATENCY_BUCKETS, seconds)
    for _ in range(3):
        metrics[REQUESTS.name].labels("chat", "gpt-4o", "up", "200").inc()
        count(tallies.tables[REQUESTS.name], ("chat", "gpt-4o", "up", "200"))
    metrics[COST.name].labels("acme", "gpt-4o").inc(0.0000325)
    count(tallies.tables[COST.name], ("acme", "gpt-4o"), 0.0000325)

    expected = generate_latest(reference).decode().splitlines()
    expected = [line for line in expected if "_created" not in line]  # as with --workers
    assert generate_latest(registry).decode().splitlines() == expected
    bucket = 'concord_request_duration_seconds_bucket{le="0.025",model="gpt-4o",route="chat"}'
    assert f"{bucket} 2.0" in expected  # 0.001 and 0.025: a bound is inclusive
