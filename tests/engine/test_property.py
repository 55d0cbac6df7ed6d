"""Property: first-match routing through the index equals a naive top-to-bottom evaluation.

The reference interpreter below reads the raw `when` dicts directly (SPEC §2.4.1) and shares no
code with `concord.engine.match`, so an indexing or compilation bug shows up as a disagreement.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from concord.config.model import Config
from concord.engine.compile import compile_graph
from concord.engine.graph import RequestContext

MODELS = ["gpt-4o", "gpt-4o-mini", "claude"]
WORKSPACES = ["acme", "free-a", "free-b"]
ENDPOINTS = ["chat", "embeddings", "messages"]
TIERS = ["gold", "silver"]
TAGS = ["paid", "beta"]
NUMBERS = [0, 100, 1000, 5000]


# -- the reference interpreter ---------------------------------------------------------------------


def field_value(name: str, req: RequestContext) -> Any:
    if name.startswith("header."):
        return req.headers.get(name[len("header.") :].lower())
    return getattr(req, name)


def equals(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str):
        return isinstance(actual, str) and fnmatchcase(actual, expected)
    if expected is None:
        return actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return actual is not None and not isinstance(actual, str) and actual == expected


def check(spec: Any, actual: Any) -> bool:
    if isinstance(spec, list):
        return any(equals(v, actual) for v in spec)
    if not isinstance(spec, dict):
        return equals(spec, actual)
    number = actual if isinstance(actual, int | float) and not isinstance(actual, bool) else None
    return all(check_op(op, arg, actual, number) for op, arg in spec.items())


def check_op(op: str, arg: Any, actual: Any, number: float | None) -> bool:
    if op == "eq":
        return equals(arg, actual)
    if op == "ne":
        return not equals(arg, actual)
    if op == "in":
        return any(equals(v, actual) for v in arg)
    if op == "not_in":
        return not any(equals(v, actual) for v in arg)
    if op == "exists":
        return (actual is not None) == arg
    if number is None:
        return False
    return {"gt": number > arg, "gte": number >= arg, "lt": number < arg, "lte": number <= arg}[op]


def holds(when: dict[str, Any] | None, req: RequestContext) -> bool:
    for key, spec in (when or {}).items():
        if key == "all":
            ok = all(holds(w, req) for w in spec)
        elif key == "any":
            ok = any(holds(w, req) for w in spec)
        elif key == "not":
            ok = not holds(spec, req)
        elif key == "tags":
            ok = any(check(spec, t) for t in req.tags) if req.tags else check(spec, None)
        else:
            ok = check(spec, field_value(key, req))
        if not ok:
            return False
    return True


def naive_route(routes: list[dict[str, Any]], req: RequestContext) -> str | None:
    for route in routes:
        if holds(route.get("when"), req):
            return route["name"]
    return None


# -- strategies ------------------------------------------------------------------------------------


def strings(values: list[str], globs: list[str]) -> st.SearchStrategy[Any]:
    one = st.sampled_from(values + globs)
    some = st.lists(st.sampled_from(values + globs), min_size=1, max_size=3)
    return st.one_of(
        one,
        some,
        st.builds(lambda v: {"eq": v}, one),
        st.builds(lambda v: {"ne": v}, one),
        st.builds(lambda v: {"in": v}, some),
        st.builds(lambda v: {"not_in": v}, some),
        st.builds(lambda v: {"exists": v}, st.booleans()),
    )


bounds = st.dictionaries(
    st.sampled_from(["gt", "gte", "lt", "lte"]), st.sampled_from(NUMBERS), min_size=1, max_size=2
)
# The indexed fields (endpoint, model, workspace) come up most, as literals and globs alike.
indexed = st.one_of(
    st.fixed_dictionaries({"endpoint": strings(ENDPOINTS, [])}),
    st.fixed_dictionaries({"model": strings(MODELS, ["gpt-*", "*-mini"])}),
    st.fixed_dictionaries({"workspace": strings(WORKSPACES, ["free-*"])}),
)
leaf = st.one_of(
    indexed,
    indexed,
    st.fixed_dictionaries({"header.X-Tier": strings(TIERS, ["g*"])}),
    st.fixed_dictionaries({"tags": strings(TAGS, [])}),
    st.fixed_dictionaries({"input_tokens": st.one_of(bounds, st.sampled_from(NUMBERS))}),
    st.fixed_dictionaries({"temperature": st.one_of(st.just(0), st.just({"exists": False}))}),
    st.fixed_dictionaries({"stream": st.booleans()}),
)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


whens = st.recursive(
    st.builds(merge, st.lists(leaf, min_size=1, max_size=3)),
    lambda inner: st.one_of(
        st.builds(lambda ws: {"all": ws}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda ws: {"any": ws}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda w: {"not": w}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=4,
)
route_lists = st.lists(st.one_of(st.none(), whens), min_size=1, max_size=8).map(
    lambda ws: [
        {"name": f"r{i}", **({"when": w} if w is not None else {})} for i, w in enumerate(ws)
    ]
)
requests = st.builds(
    RequestContext,
    endpoint=st.sampled_from(ENDPOINTS),
    model=st.sampled_from([*MODELS, "unknown"]),
    workspace=st.sampled_from([*WORKSPACES, "default"]),
    tags=st.frozensets(st.sampled_from(TAGS), max_size=2),
    headers=st.one_of(st.just({}), st.builds(lambda t: {"x-tier": t}, st.sampled_from(TIERS))),
    input_tokens=st.sampled_from([0, 50, 100, 999, 1000, 1001, 5000, 9000]),
    temperature=st.sampled_from([None, 0.0, 0.7]),
    stream=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(routes=route_lists, reqs=st.lists(requests, min_size=1, max_size=10))
def test_decide_picks_the_same_route_as_a_naive_evaluation(
    routes: list[dict[str, Any]], reqs: list[RequestContext]
) -> None:
    config = Config.model_validate(
        {
            "version": 1,
            "providers": {"p": {"type": "mock"}},
            "models": {m: {"targets": [f"p/{m}"]} for m in MODELS},
            "routes": routes,
        }
    )
    graph = compile_graph(config)
    for req in reqs:
        expected = naive_route(routes, req)
        assert graph.decide(req).route == expected, (routes, req)
        # explain names every earlier route, with a failing condition the reference agrees with.
        explanation = graph.explain(req)
        matched = next((i for i, r in enumerate(routes) if r["name"] == expected), len(routes))
        assert [m.route for m in explanation.misses] == [r["name"] for r in routes[:matched]]
        assert all(m.condition != "did not match" for m in explanation.misses)
