"""Routing tests (SPEC §6): run the compiled `tests:` cases against the graph.

Each case's request is decided with no runtime state: every circuit closed and every declared
provider up, even one whose api_keys are unset here (CI runs routing tests without secrets);
and each field of `expect` that was given is compared with the decision. A failure lists one
line per field that differs, so `concord test` reads like a test runner.

The gateway's guards step (budgets: block or downgrade) lives outside the engine; a caller that
wants tests to see it passes it in as `guard`. `expect.reject` counts every refusal the gateway
answers before calling upstream: a route's `reject`, a 404 `model_not_found`, a budget's 429.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from concord.engine.graph import (
    Decision,
    Graph,
    RequestContext,
    RoutingTest,
    RuntimeView,
    TestExpectation,
)

# Circuits closed, round-robin at 0, weighted draw 0, every declared provider usable.
TEST_RUNTIME = RuntimeView(assume_providers_available=True)

# What happens to a decision after `decide` and before the upstream call (the guards step).
Guard = Callable[[Graph, RequestContext, Decision, RuntimeView], Decision]

# The status a `model_not_found` answer carries (SPEC §2.4).
NOT_FOUND_STATUS = 404


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """The result of one routing test; `diffs` is empty when it passed."""

    __test__ = False  # not a pytest class

    name: str
    diffs: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.diffs


def run_tests(graph: Graph, guard: Guard | None = None) -> list[TestOutcome]:
    """Every `tests:` case of the graph, in file order."""
    return [run_test(graph, case, guard) for case in graph.tests]


def run_test(graph: Graph, case: RoutingTest, guard: Guard | None = None) -> TestOutcome:
    decision = graph.decide(case.context, TEST_RUNTIME)
    if guard is not None:
        decision = guard(graph, case.context, decision, TEST_RUNTIME)
    return TestOutcome(case.name, tuple(compare(case.expect, decision)))


def compare(expect: TestExpectation, decision: Decision) -> list[str]:
    """One `field: expected X, got Y` line per expected field the decision does not satisfy."""
    diffs: list[str] = []
    if expect.route is not None and decision.route != expect.route:
        diffs.append(_diff("route", expect.route, decision.route or "(no route matched)"))
    if expect.model is not None and decision.model != expect.model:
        diffs.append(_diff("model", expect.model, _model_text(decision)))
    if expect.attempts is not None:
        got = [a.target.id for a in decision.attempts]
        if got != list(expect.attempts):
            diffs.append(_diff("attempts", _list(expect.attempts), _list(got)))
    if expect.reject is not None:
        diffs.extend(_compare_reject(expect.reject, decision))
    if expect.cache is not None and (decision.cache is not None) != expect.cache:
        diffs.append(_diff("cache", _bool(expect.cache), _bool(decision.cache is not None)))
    if expect.limits is not None:
        got_limits = sorted(rule.name for rule in decision.rate_limits)
        if got_limits != sorted(expect.limits):
            diffs.append(_diff("limits", _list(sorted(expect.limits)), _list(got_limits)))
    return diffs


def _compare_reject(expected: int | bool, decision: Decision) -> list[str]:
    status = rejected_status(decision)
    got = f"rejected with {status}" if status is not None else "not rejected"
    if expected is True and status is None:
        return [_diff("reject", "rejected", got)]
    if expected is False and status is not None:
        return [_diff("reject", "not rejected", got)]
    if not isinstance(expected, bool) and status != expected:
        return [_diff("reject", f"rejected with {expected}", got)]
    return []


def rejected_status(decision: Decision) -> int | None:
    """The status the gateway refuses this decision with, before any upstream call; None when it
    is served. A model the workspace may not see is refused like any other (404)."""
    if decision.rejection is not None:
        return decision.rejection.status
    return NOT_FOUND_STATUS if decision.not_found else None


def _model_text(decision: Decision) -> str:
    if decision.rejection is not None:
        return f"(rejected with {decision.rejection.status})"
    if decision.model is None:
        return f"(model_not_found: '{decision.requested_model}')"
    return decision.model


def _diff(name: str, expected: str, got: str) -> str:
    return f"{name}: expected {expected}, got {got}"


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _bool(value: bool) -> str:
    return "true" if value else "false"
