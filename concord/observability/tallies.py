"""The per-request metric families of one process, kept as plain numbers (SPEC §7).

Every request updates about eight series (requests, latency, tokens, cost, upstream calls...).
prometheus-client's metric objects take a lock and run several checks on each update: about 8 µs
of CPU per request in all, measured. With one process serving, these families are instead counted
in dicts on the event loop (which is the only writer) and turned into metric families when
`/metrics` is scraped, through prometheus-client's `Collector` interface: the exposition is the
same, at about a tenth of the cost. Under `--workers` the families stay prometheus-client metrics,
which share their values between processes through files (`metrics.py`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: a counter, or a histogram when it has `buckets` (upper bounds)."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None


def count(table: dict[Labels, float], labels: Labels, amount: float = 1) -> None:
    """Add `amount` to a counter series."""
    table[labels] = table.get(labels, 0) + amount


def observe(
    table: dict[Labels, list[float]], labels: Labels, bounds: Sequence[float], value: float
) -> None:
    """One observation of a histogram series: per-bucket counts (the last for +Inf), then the
    sum, as one list; cumulated only when scraped."""
    counts = table.get(labels)
    if counts is None:
        counts = table[labels] = [0] * (len(bounds) + 1) + [0.0]
    counts[bisect_left(bounds, value)] += 1  # the first bound >= value: `le` is inclusive
    counts[-1] += value


class Tallies(Collector):
    """The tables of `families` (by family name), exposed as metric families on collection."""

    def __init__(self, families: Iterable[Family]) -> None:
        self.families = tuple(families)
        self.tables: dict[str, dict[Labels, object]] = {f.name: {} for f in self.families}

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield _exposed(family, self.tables[family.name])

    def describe(self) -> Iterator[Metric]:
        for family in self.families:
            yield _exposed(family, {})


def _exposed(family: Family, table: dict[Labels, object]) -> Metric:
    if family.buckets is None:
        counter = CounterMetricFamily(family.name, family.help, labels=family.labels)
        for labels, value in table.items():
            counter.add_metric(labels, value)  # type: ignore[arg-type]
        return counter
    histogram = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    bounds = [floatToGoString(bound) for bound in family.buckets] + ["+Inf"]
    for labels, counts in table.items():
        per_bucket, total = counts[:-1], counts[-1]  # type: ignore[index]
        cumulative, running = [], 0
        for bound, number in zip(bounds, per_bucket, strict=True):
            running += number
            cumulative.append((bound, running))
        histogram.add_metric(labels, cumulative, sum_value=total)
    return histogram
