"""Semantic checks: what a schema cannot see (SPEC §6 "Validation also reports").

By the time these run, JSON Schema and pydantic have proved types, enums, required fields and
unknown keys. What is left needs the whole config at once: names that refer to other names,
fallback cycles, routes shadowed by earlier ones, regexes and globs inside `when`, and settings
that are valid alone but wrong together.

Each check is a small function that adds diagnostics to a shared `_Report`; every check runs, so
one `validate` lists every problem (STYLE habit 4). Each diagnostic sits on the most precise node
the source knows: the bad value, or the name key of a duplicate (STYLE habit 3).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from concord.config.errors import (
    Diagnostic,
    Location,
    Path,
    Severity,
    did_you_mean,
    dotted,
    sort_diagnostics,
)
from concord.config.model import BOOLEAN_FIELDS as SCHEMA_BOOLEAN_FIELDS
from concord.config.model import (
    COMPARISONS,
    DATABASE_URL_PATTERN,
    ENDPOINTS,
    REQUESTED,
    STATE_URL_PATTERN,
    BudgetSpec,
    Config,
    ModelConfig,
    Route,
    TargetSpec,
)
from concord.config.model import NUMERIC_FIELDS as SCHEMA_NUMERIC_FIELDS
from concord.config.model import STRING_FIELDS as SCHEMA_STRING_FIELDS
from concord.config.values import format_duration
from concord.engine.match import glob_regex, is_secret_field

# SPEC §2.4.1: what kind of value each `when` field holds, as the schema (config/model.py) says.
# Headers and metadata are "any": the matcher compares numbers with numeric text there
# (engine/match.py), so `gt` on them works.
STRING_FIELDS = frozenset(SCHEMA_STRING_FIELDS)
NUMERIC_FIELDS = frozenset(SCHEMA_NUMERIC_FIELDS)
BOOLEAN_FIELDS = frozenset(SCHEMA_BOOLEAN_FIELDS)
NUMERIC_OPERATORS = frozenset(COMPARISONS)
# Operators whose operands are compared for equality (so strings in them are globs).
EQUALITY_OPERATORS = frozenset({"eq", "ne", "in", "not_in"})
# SPEC §2.4.2: `params.set` may not force these: routing picks the model, the client the stream.
ROUTING_OWNED_PARAMS = {
    "model": "the route's use decides the model",
    "stream": "the client decides whether to stream",
}


class Positions(Protocol):
    """What the checks need from `concord.config.source.Source`: the tree and node positions."""

    @property
    def tree(self) -> Mapping[str, Any]: ...

    def where(self, path: Path) -> Location: ...

    def key_where(self, path: Path) -> Location: ...


@dataclass
class _Report:
    """The config under check, its positions, and the diagnostics found so far."""

    config: Config
    source: Positions
    found: list[Diagnostic] = field(default_factory=list)

    def add(
        self,
        severity: Severity,
        path: Path,
        message: str,
        hint: str | None = None,
        *,
        code: str,
        at_key: bool = False,
    ) -> None:
        location = self.source.key_where(path) if at_key else self.source.where(path)
        self.found.append(Diagnostic(severity, location, dotted(path), message, hint, code))

    def error(
        self, path: Path, message: str, hint: str | None = None, *, code: str, at_key: bool = False
    ) -> None:
        self.add("error", path, message, hint, code=code, at_key=at_key)

    def warning(
        self, path: Path, message: str, hint: str | None = None, *, code: str, at_key: bool = False
    ) -> None:
        self.add("warning", path, message, hint, code=code, at_key=at_key)

    def written(self, path: Path) -> bool:
        """True when the file itself holds a value at `path` (not a model default)."""
        node: Any = self.source.tree
        for part in path:
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    return False
            elif not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return True


Check = Callable[[_Report], None]


def run_checks(config: Config, source: Positions) -> list[Diagnostic]:
    """Every semantic problem in `config`, located through `source`, sorted by file and line."""
    report = _Report(config, source)
    for check in CHECKS:
        check(report)
    return sort_diagnostics(report.found)


# --- small helpers -------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as the user wrote it: strings quoted, everything else in YAML/JSON spelling."""
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value, default=str)


def _split_target(target: str) -> tuple[str, str] | None:
    """`provider/upstream-model` -> (provider, model); the model part may itself contain `/`."""
    provider, sep, model = target.partition("/")
    return (provider, model) if sep and provider and model else None


def _target_entries(name: str, model: ModelConfig) -> Iterator[tuple[str, Path]]:
    """Each target string of a catalog model with the path of that string in the file."""
    for i, entry in enumerate(model.targets):
        if isinstance(entry, TargetSpec):
            yield entry.target, ("models", name, "targets", i, "target")
        else:
            yield entry, ("models", name, "targets", i)


def _workspace_budgets(config: Config) -> Iterator[tuple[BudgetSpec, Path]]:
    for name, workspace in config.workspaces.items():
        if workspace.budget is not None:
            yield workspace.budget, ("workspaces", name, "budget")


def _whens(config: Config) -> Iterator[tuple[Mapping[str, Any], Path]]:
    """Every top-level `when` in the config, with its path."""
    for i, route in enumerate(config.routes):
        if route.when is not None:
            yield route.when, ("routes", i, "when")
        if route.cache and route.cache.when is not None:
            yield route.cache.when, ("routes", i, "cache", "when")
    if config.defaults.cache.when is not None:
        yield config.defaults.cache.when, ("defaults", "cache", "when")
    for i, budget in enumerate(config.budgets):
        if budget.when is not None:
            yield budget.when, ("budgets", i, "when")
    for i, limit in enumerate(config.rate_limits):
        if limit.when is not None:
            yield limit.when, ("rate_limits", i, "when")


def _conditions(when: Mapping[str, Any], path: Path) -> Iterator[tuple[str, Any, Path]]:
    """(field, match value, path) for each field condition, descending into all/any/not."""
    for key, value in when.items():
        if key in ("all", "any") and isinstance(value, list):
            for i, sub in enumerate(value):
                if isinstance(sub, Mapping):
                    yield from _conditions(sub, (*path, key, i))
        elif key == "not" and isinstance(value, Mapping):
            yield from _conditions(value, (*path, key))
        elif key not in ("all", "any", "not"):
            yield key, value, (*path, key)


def _operands(value: Any, path: Path) -> Iterator[tuple[str, Any, Path]]:
    """(operator, operand, path) for each scalar operand of a match value (SPEC §2.4.1 forms).

    A scalar is `eq`, a list is `in` item by item, a map yields each operator; list operands of
    `in`/`not_in` are yielded item by item so each bad item gets its own location.
    """
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield "in", item, (*path, i)
    elif isinstance(value, Mapping):
        for op, operand in value.items():
            if isinstance(operand, list):
                for i, item in enumerate(operand):
                    yield op, item, (*path, op, i)
            else:
                yield op, operand, (*path, op)
    else:
        yield "eq", value, path


def _field_kind(name: str) -> str:
    if name in NUMERIC_FIELDS:
        return "numeric"
    if name in BOOLEAN_FIELDS:
        return "boolean"
    if name in STRING_FIELDS:
        return "string"
    return "any"  # header.<name>, metadata.<name>: text or numbers, whatever the client sends


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _glob_problem(pattern: str) -> str | None:
    """Why `pattern` is a broken glob, or None.

    Only `*` is a wildcard (engine/match.py), so brackets match themselves; an unbalanced one
    is still almost always a typo for a character class, and a request value rarely holds one.
    """
    if pattern == "":
        return "an empty pattern matches nothing"
    depth = 0
    for char in pattern:
        if char == "[":
            if depth:
                return "'[' inside '[...]'"
            depth = 1
        elif char == "]":
            if not depth:
                return "']' has no matching '['"
            depth = 0
    return "'[' is never closed" if depth else None


_CLASS = re.compile(r"\[[^\[\]]*\]")


def _literal_class(pattern: str) -> str | None:
    """A `[...]` that a user may take for a character class, though it matches literally."""
    match = _CLASS.search(pattern)
    return match.group(0) if match else None


def _is_glob(value: str) -> bool:
    return "*" in value


def _glob_matches(pattern: str, name: str) -> bool:
    """The matcher's own glob semantics, so a check never disagrees with routing."""
    return glob_regex(pattern).match(name) is not None if _is_glob(pattern) else pattern == name


def _model_ref(r: _Report, name: str, path: Path, *, allow_requested: bool = False) -> None:
    """Report `name` if it is not a catalog model (SPEC §2.4.2: `$requested` only in `use`)."""
    if name == REQUESTED:
        if not allow_requested:
            r.error(
                path,
                f"'{REQUESTED}' is only allowed in a route's use",
                code="misplaced_requested",
            )
        return
    if name not in r.config.models:
        r.error(
            path,
            f"unknown model '{name}'",
            did_you_mean(name, r.config.models),
            code="unknown_model",
        )


def _check_target_string(r: _Report, target: str, path: Path) -> None:
    parts = _split_target(target)
    if parts is None:
        r.error(
            path,
            f"target '{target}' is not provider/model",
            "write it as <provider>/<upstream model>, e.g. openai/gpt-4o",
            code="bad_target",
        )
        return
    provider = parts[0]
    if provider not in r.config.providers:
        r.error(
            path,
            f"unknown provider '{provider}' in target '{target}'",
            did_you_mean(provider, r.config.providers),
            code="unknown_provider",
        )


def _duplicate_names(r: _Report, named: Iterable[tuple[str, Path]], what: str) -> None:
    """Report every repeat of a name, on its `name:` key, naming where it was first defined."""
    first: dict[str, Path] = {}
    for name, path in named:
        if name not in first:
            first[name] = path
            continue
        earlier = r.source.key_where(first[name])
        r.error(
            path,
            f"duplicate {what} name '{name}' (first defined at {earlier})",
            code="duplicate_name",
            at_key=True,
        )


# --- 1. targets ----------------------------------------------------------------------------------


def check_targets(r: _Report) -> None:
    """SPEC §2.3: each target is `provider/model` and names a declared provider."""
    for name, model in r.config.models.items():
        for target, path in _target_entries(name, model):
            _check_target_string(r, target, path)


# --- 2, 3. model references ----------------------------------------------------------------------


def check_model_references(r: _Report) -> None:
    """Every name that should be a catalog model is one; `$requested` only in a route's use."""
    config = r.config
    for i, route in enumerate(config.routes):
        if route.use is not None:
            _model_ref(r, route.use, ("routes", i, "use"), allow_requested=True)
        for j, name in enumerate(route.fallbacks):
            _model_ref(r, name, ("routes", i, "fallbacks", j))
    for model_name, model in config.models.items():
        for j, name in enumerate(model.fallbacks):
            _model_ref(r, name, ("models", model_name, "fallbacks", j))
    for budget, path in _workspace_budgets(config):
        if budget.downgrade_to is not None:
            _model_ref(r, budget.downgrade_to, (*path, "downgrade_to"))
    for i, rule in enumerate(config.budgets):
        if rule.downgrade_to is not None:
            _model_ref(r, rule.downgrade_to, ("budgets", i, "downgrade_to"))
    for i, case in enumerate(config.tests):
        if case.expect.model is not None:
            _model_ref(r, case.expect.model, ("tests", i, "expect", "model"))


# --- 4. fallback cycles --------------------------------------------------------------------------


def check_fallback_cycles(r: _Report) -> None:
    """Model-level fallbacks must not loop (a -> b -> a), or a failing request never ends."""
    models = r.config.models
    seen_cycles: set[frozenset[str]] = set()
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        stack.append(name)
        for j, nxt in enumerate(models[name].fallbacks):
            if nxt not in models:
                continue  # reported as an unknown model
            if nxt in stack:
                cycle = [*stack[stack.index(nxt) :], nxt]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    r.error(
                        ("models", name, "fallbacks", j),
                        "fallback cycle: " + " -> ".join(cycle),
                        code="fallback_cycle",
                    )
            elif nxt not in done:
                visit(nxt, stack)
        stack.pop()
        done.add(name)

    for name in models:
        if name not in done:
            visit(name, [])


def check_route_self_fallback(r: _Report) -> None:
    """A route falling back to its own `use` model retries it for nothing."""
    for i, route in enumerate(r.config.routes):
        if route.use is None or route.use == REQUESTED:
            continue
        for j, name in enumerate(route.fallbacks):
            if name == route.use:
                r.warning(
                    ("routes", i, "fallbacks", j),
                    f"route '{route.name}' falls back to its own model '{name}'",
                    code="self_fallback",
                )


# --- 5. rate limit references --------------------------------------------------------------------


def check_limit_references(r: _Report) -> None:
    """SPEC §2.4.2: route `limits` (and test expectations) name declared rate limits."""
    declared = [limit.name for limit in r.config.rate_limits]
    refs: list[tuple[str, Path]] = []
    for i, route in enumerate(r.config.routes):
        refs += [(name, ("routes", i, "limits", j)) for j, name in enumerate(route.limits)]
    for i, case in enumerate(r.config.tests):
        for j, name in enumerate(case.expect.limits or []):
            refs.append((name, ("tests", i, "expect", "limits", j)))
    for name, path in refs:
        if name not in declared:
            r.error(
                path,
                f"unknown rate limit '{name}'",
                did_you_mean(name, declared),
                code="unknown_rate_limit",
            )


# --- 6. duplicate names --------------------------------------------------------------------------


def check_duplicate_names(r: _Report) -> None:
    """Names are how routes, limits, budgets, tests and keys are referred to: each is unique."""
    config = r.config
    lists: Sequence[tuple[str, str, Sequence[Any]]] = (
        ("routes", "route", config.routes),
        ("rate_limits", "rate limit", config.rate_limits),
        ("budgets", "budget", config.budgets),
        ("tests", "test", config.tests),
    )
    for key, what, items in lists:
        _duplicate_names(r, ((item.name, (key, i, "name")) for i, item in enumerate(items)), what)
    keys = config.auth.keys
    _duplicate_names(r, ((k.name, ("auth", "keys", i, "name")) for i, k in enumerate(keys)), "key")


# --- 7. route actions ----------------------------------------------------------------------------


def check_route_actions(r: _Report) -> None:
    """SPEC §2.4.2: a route either uses a model or rejects, never both, never neither."""
    for i, route in enumerate(r.config.routes):
        if route.use is None and route.reject is None:
            r.error(
                ("routes", i),
                f"route '{route.name}' has neither use nor reject",
                "add use: <model or $requested> or reject: {status, message}",
                code="route_action",
            )
        elif route.use is not None and route.reject is not None:
            r.error(
                ("routes", i, "reject"),
                f"route '{route.name}' has both use and reject",
                "keep one of them",
                code="route_action",
                at_key=True,
            )
        elif route.reject is not None and route.fallbacks:
            r.warning(
                ("routes", i, "fallbacks"),
                f"route '{route.name}' rejects, so its fallbacks are never tried",
                code="route_action",
                at_key=True,
            )


# --- 8. shadowed routes --------------------------------------------------------------------------


def check_shadowed_routes(r: _Report) -> None:
    """Warn about a route no request can reach, naming the first earlier route that covers it.

    An earlier route covers a later one (SPEC §2.4: first match wins) when each of its
    conditions admits everything the later route's condition on the same field admits: the
    same condition, a glob or list holding the later value (`gpt-*` covers `gpt-4o`), a range
    holding the later one (`gt: 100` covers `gt: 200`), `exists: true`. Sound, not complete. An
    empty `when` covers everything after it. Identical condition sets are found through an
    index; the looser comparisons look at the earlier routes that have a loose condition, up to
    `SHADOW_CHECK_BUDGET` comparisons a config, so 10,000 routes take a second, not minutes."""
    first_with: dict[frozenset[tuple[str, str]], int] = {}  # conditions -> first such route
    loose: list[tuple[int, _Shape]] = []  # earlier routes with a condition looser than `==`
    budget = SHADOW_CHECK_BUDGET
    for i, route in enumerate(r.config.routes):
        shape = _Shape.of(route)
        conditions = frozenset(shape.texts.items())
        covering = _first_covering(conditions, first_with)
        for j, earlier in loose:
            if (covering is not None and j >= covering) or budget <= 0:
                break
            budget -= 1
            if earlier.covers(shape):
                covering = j
                break
        if covering is not None:
            r.warning(
                ("routes", i),
                f"route '{route.name}' can never match: the earlier route "
                f"'{r.config.routes[covering].name}' matches all its requests",
                code="shadowed_route",
            )
        first_with.setdefault(conditions, i)
        if shape.loose:
            loose.append((i, shape))


# Comparisons of route pairs the shadowed-route check may make beyond its index.
SHADOW_CHECK_BUDGET = 250_000


@dataclass(frozen=True, slots=True)
class _Shape:
    """A route's `when` for the shadowed-route check: per field, the set of values it admits."""

    fields: dict[str, Any]
    texts: dict[str, str]  # each condition in one canonical text, which tells `true` from `1`
    keys: frozenset[str]
    loose: bool  # some condition admits more than one value

    @classmethod
    def of(cls, route: Route) -> _Shape:
        when = route.when or {}
        fields = {key: _admitted(key, value) for key, value in when.items()}
        texts = {key: _canonical(value) for key, value in when.items()}
        loose = any(admits is not None and admits[0] != "exact" for admits in fields.values())
        return cls(fields, texts, frozenset(fields), loose)

    def covers(self, later: _Shape) -> bool:
        if not self.keys <= later.keys:
            return False
        return all(
            text == later.texts[key] or _covers(self.fields[key], later.fields[key])
            for key, text in self.texts.items()
        )


def _admitted(key: str, value: Any) -> Any:
    """What a condition admits: ("exact", value) for one value, ("one_of", values) for a value,
    glob or list, ("range", low, low_closed, high, high_closed), ("exists",), or None when only
    an identical condition is known to admit the same (tags, any, not, regex...)."""
    if key in ("tags", "any", "not"):
        return None
    if isinstance(value, list) or (isinstance(value, str) and "*" in value):
        values = value if isinstance(value, list) else [value]
        return ("one_of", tuple(values)) if all(_plain(v) for v in values) else None
    if isinstance(value, Mapping):
        if set(value) == {"in"} and isinstance(value["in"], list):
            return _admitted(key, value["in"])
        if set(value) == {"exists"} and value["exists"] is True:
            return ("exists",)
        if value and set(value) <= {"gt", "gte", "lt", "lte"}:
            return _range(value)
        return None
    return ("exact", value) if _plain(value) else None


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _range(ops: Mapping[str, Any]) -> Any:
    low, low_closed, high, high_closed = float("-inf"), False, float("inf"), False
    for op, bound in ops.items():
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            return None
        if op in ("gt", "gte") and (bound > low or (bound == low and op == "gt")):
            low, low_closed = bound, op == "gte"
        elif op in ("lt", "lte") and (bound < high or (bound == high and op == "lt")):
            high, high_closed = bound, op == "lte"
    return ("range", low, low_closed, high, high_closed)


def _covers(mine: Any, theirs: Any) -> bool:
    """Whether every value condition `theirs` admits, `mine` admits too (None: unknown)."""
    if mine is None or theirs is None:
        return False
    kind = mine[0]
    if kind == "exists":
        return (
            theirs[0] in ("range", "exists")
            or (theirs[0] == "one_of" and None not in theirs[1])
            or (theirs[0] == "exact" and theirs[1] is not None)
        )
    if theirs[0] == "exists":
        return False
    if kind == "range":
        if theirs[0] == "range":
            return _below(mine[1], mine[2], theirs[1], theirs[2]) and _below(
                theirs[3], theirs[4], mine[3], mine[4]
            )
        values = _values(theirs)
        return values is not None and all(_in_range(mine, value) for value in values)
    values = _values(theirs)
    if values is None or theirs[0] == "range":
        return False
    accepted = [mine[1]] if kind == "exact" else list(mine[1])
    return all(any(_admits(pattern, value) for pattern in accepted) for value in values)


def _values(admits: Any) -> list[Any] | None:
    if admits[0] == "exact":
        return [admits[1]]
    if admits[0] == "one_of":
        return list(admits[1])
    return None


def _admits(pattern: Any, value: Any) -> bool:
    """One accepted value or glob against one admitted value or glob."""
    if isinstance(pattern, str) and "*" in pattern:
        if isinstance(value, str) and "*" in value:  # a glob within a glob: prefix ones only
            prefix = pattern[:-1]
            return pattern.count("*") == 1 and pattern.endswith("*") and value.startswith(prefix)
        return isinstance(value, str) and _glob_matches(pattern, value)
    return _canonical(pattern) == _canonical(value)


def _below(low: float, low_closed: bool, other: float, other_closed: bool) -> bool:
    """Whether a bound (`low`) starts no later than `other`, as lower bounds."""
    return low < other or (low == other and (low_closed or not other_closed))


def _in_range(admits: Any, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    _, low, low_closed, high, high_closed = admits
    above = value > low or (low_closed and value == low)
    below = value < high or (high_closed and value == high)
    return above and below


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _first_covering(
    conditions: frozenset[tuple[str, str]], first_with: dict[frozenset[tuple[str, str]], int]
) -> int | None:
    """The first earlier route whose conditions are a subset of `conditions`: by looking up
    each subset (a route has a handful of conditions) or, when the earlier routes have fewer
    distinct condition sets than that, by testing each of them."""
    found: list[int] = []
    if 2 ** len(conditions) <= len(first_with):
        items = sorted(conditions)
        for size in range(len(items) + 1):
            for subset in itertools.combinations(items, size):
                index = first_with.get(frozenset(subset))
                if index is not None:
                    found.append(index)
    else:
        found = [index for earlier, index in first_with.items() if earlier <= conditions]
    return min(found, default=None)


# --- 9, 10, 11. match conditions -----------------------------------------------------------------


def check_conditions(r: _Report) -> None:
    """Regexes compile, globs are balanced, endpoints exist, operators suit the field's type."""
    for when, path in _whens(r.config):
        for name, value, field_path in _conditions(when, path):
            kind = _field_kind(name)
            for op, operand, op_path in _operands(value, field_path):
                _check_operand(r, name, kind, op, operand, op_path)


def _check_operand(r: _Report, name: str, kind: str, op: str, operand: Any, path: Path) -> None:
    if op == "exists":
        return
    if is_secret_field(name):
        if op == "regex":
            _check_regex(r, operand, path, shown="***")
        elif isinstance(operand, str):
            _check_pattern(r, name, operand, path, shown="***")
        return
    if op == "regex":
        _check_regex(r, operand, path)
    elif op in NUMERIC_OPERATORS:
        if kind in ("string", "boolean"):
            r.error(
                path,
                f"operator '{op}' compares numbers, but '{name}' is a {kind} field",
                code="type_mismatch",
            )
    elif operand is None:
        return  # SPEC §2.4.1: absent request parameters are null
    elif kind == "numeric" and not _is_number(operand):
        r.error(
            path,
            f"'{name}' is a numeric field; {_show(operand)} is not a number",
            code="type_mismatch",
        )
    elif kind == "boolean" and not isinstance(operand, bool):
        r.error(
            path,
            f"'{name}' is a boolean field; {_show(operand)} is not true or false",
            code="type_mismatch",
        )
    elif kind in ("string", "any") and isinstance(operand, str):
        _check_pattern(r, name, operand, path)


def _check_regex(r: _Report, pattern: Any, path: Path, shown: str | None = None) -> None:
    try:
        re.compile(str(pattern))
    except re.error as exc:
        r.error(path, f"invalid regex {shown or _show(pattern)}: {exc}", code="bad_regex")


def _check_pattern(
    r: _Report, name: str, pattern: str, path: Path, shown: str | None = None
) -> None:
    problem = _glob_problem(pattern)
    if problem is not None:
        r.error(path, f"invalid pattern {shown or _show(pattern)}: {problem}", code="bad_glob")
        return
    literal = _literal_class(pattern)
    if literal is not None and shown is None:
        r.warning(
            path,
            f"in pattern {_show(pattern)}, '{literal}' matches only the text {literal}",
            "only * is a wildcard",
            code="bad_glob",
        )
    if name == "endpoint" and not any(_glob_matches(pattern, e) for e in ENDPOINTS):
        r.error(
            path,
            f"unknown endpoint '{pattern}'",
            did_you_mean(pattern, ENDPOINTS) or "expected " + ", ".join(ENDPOINTS),
            code="unknown_endpoint",
        )


# --- 12, 13, 14. limits, retry, budgets ----------------------------------------------------------


def check_rate_limit_amounts(r: _Report) -> None:
    """SPEC §2.7: a rate limit limits requests (rpm), tokens (tpm) or both."""
    for i, limit in enumerate(r.config.rate_limits):
        if limit.rpm is None and limit.tpm is None:
            r.error(
                ("rate_limits", i),
                f"rate limit '{limit.name}' sets neither rpm nor tpm",
                code="empty_rate_limit",
            )


def check_backoff(r: _Report) -> None:
    """SPEC §2.5: backoff grows from `initial` up to `max`, so initial may not exceed max.

    A route's backoff overrides `defaults.retry.backoff` field by field (as compile merges it),
    so a route is checked on the merged pair and only when it sets one of the two itself.
    """
    default = r.config.defaults.retry.backoff
    _check_backoff_pair(r, default.initial, default.max, ("defaults", "retry", "backoff"))
    for i, route in enumerate(r.config.routes):
        if route.retry is None or "backoff" not in route.retry.model_fields_set:
            continue
        own = route.retry.backoff
        written = own.model_fields_set & {"initial", "max"}
        if written:
            initial = own.initial if "initial" in written else default.initial
            maximum = own.max if "max" in written else default.max
            _check_backoff_pair(r, initial, maximum, ("routes", i, "retry", "backoff"))


def _check_backoff_pair(r: _Report, initial: float, maximum: float, path: Path) -> None:
    if initial <= maximum:
        return
    # Point at whichever of the two the file wrote; `initial` when it wrote both.
    at = "initial" if r.written((*path, "initial")) or not r.written((*path, "max")) else "max"
    r.error(
        (*path, at),
        f"backoff initial {format_duration(initial)} is greater than "
        f"max {format_duration(maximum)}",
        code="backoff_range",
    )


def check_downgrades(r: _Report) -> None:
    """SPEC §2.6: `downgrade` needs a model to downgrade to; `block` ignores one."""
    budgets: list[tuple[Any, Path]] = list(_workspace_budgets(r.config))
    budgets += [(rule, ("budgets", i)) for i, rule in enumerate(r.config.budgets)]
    for budget, path in budgets:
        if budget.on_exceed == "downgrade" and budget.downgrade_to is None:
            r.error(
                (*path, "on_exceed"),
                "on_exceed: downgrade needs downgrade_to",
                "name the catalog model to continue on",
                code="downgrade",
            )
        elif budget.on_exceed == "block" and budget.downgrade_to is not None:
            r.warning(
                (*path, "downgrade_to"),
                f"downgrade_to '{budget.downgrade_to}' is ignored: on_exceed is block",
                code="downgrade",
            )


# --- 15, 16. storage and providers ---------------------------------------------------------------

# The forms state/backend.py and records/db.py accept, so validate and serve agree (STYLE 12).
_STATE_URL = re.compile(STATE_URL_PATTERN, re.IGNORECASE)
_DATABASE_URL = re.compile(DATABASE_URL_PATTERN)
_USERINFO = re.compile(r"(//)[^/@]*@")


def _redact(url: str) -> str:
    """Hide credentials in a URL (`redis://:secret@host` -> `redis://***@host`)."""
    return _USERINFO.sub(r"\1***@", url)


def check_storage(r: _Report) -> None:
    """SPEC §1: state is memory or Redis; the database is SQLite or PostgreSQL."""
    storage = r.config.storage
    if storage.state != "memory" and not _STATE_URL.match(storage.state):
        r.error(
            ("storage", "state"),
            f"'{_redact(storage.state)}' is neither memory nor a Redis URL",
            "use memory, redis://host:6379/0, rediss://host:6380/0 or unix:///path/redis.sock",
            code="storage_url",
        )
    if not _DATABASE_URL.match(storage.database):
        r.error(
            ("storage", "database"),
            f"'{_redact(storage.database)}' is not a SQLite or PostgreSQL URL",
            "use sqlite:///concord.db or postgresql://user@host/dbname",
            code="storage_url",
        )


def check_providers(r: _Report) -> None:
    """SPEC §2.2: Azure needs its endpoint and API version; mock never calls a URL."""
    for name, provider in r.config.providers.items():
        path: Path = ("providers", name)
        if provider.type == "azure":
            for setting, example in (
                ("base_url", "https://x.openai.azure.com"),
                ("api_version", "2024-10-21"),
            ):
                if getattr(provider, setting) is None:
                    r.error(
                        path,
                        f"azure provider '{name}' needs {setting}",
                        f"e.g. {setting}: {example}",
                        code="provider_settings",
                        at_key=True,
                    )
        elif provider.type == "mock" and provider.base_url is not None:
            r.warning(
                (*path, "base_url"),
                f"base_url is ignored: provider '{name}' is a mock",
                code="provider_settings",
            )


# --- 17, 18. catalog -----------------------------------------------------------------------------


def _reachable_models(config: Config) -> set[str]:
    """Catalog models a request can end up on.

    Any catalog model can be asked for by name (SPEC §2.4: with no matching route the request
    goes to the requested model), unless a catch-all route sends everything to a fixed model
    before any route passes the requested model through. Routes, budgets and model fallbacks
    then add what they name.
    """
    reached: set[str] = set()
    requestable = True
    for route in config.routes:
        if route.use == REQUESTED:
            break
        if not route.when:
            requestable = False
            break
    if requestable:
        reached.update(config.models)
    for route in config.routes:
        if route.use is not None:
            reached.add(route.use)
        reached.update(route.fallbacks)
    reached.update(
        budget.downgrade_to for budget, _ in _workspace_budgets(config) if budget.downgrade_to
    )
    reached.update(rule.downgrade_to for rule in config.budgets if rule.downgrade_to)
    pending = [name for name in reached if name in config.models]
    while pending:
        for fallback in config.models[pending.pop()].fallbacks:
            if fallback in config.models and fallback not in reached:
                reached.add(fallback)
                pending.append(fallback)
    return reached & set(config.models)


def check_prices(r: _Report) -> None:
    """SPEC §2.6: spend is tokens x price, so a model with no price is free to every budget."""
    config = r.config
    if not config.budgets and not any(True for _ in _workspace_budgets(config)):
        return
    reachable = _reachable_models(config)
    for name, model in config.models.items():
        if name in reachable and model.price is None:
            r.warning(
                ("models", name),
                f"model '{name}' has no price; budgets count it as free",
                code="missing_price",
                at_key=True,
            )


def _window_needs(config: Config) -> dict[str, str]:
    """Model name -> why it needs a context_window (the first reason found)."""
    needs: dict[str, str] = {}
    for route in config.routes:
        models = [m for m in (route.use, *route.fallbacks) if m and m != REQUESTED]
        if route.when and any(f == "input_tokens" for f, _, _ in _conditions(route.when, ())):
            for name in models:
                needs.setdefault(name, f"route '{route.name}' matches on input_tokens")
        if route.context_overflow in ("truncate", "summarize"):
            for name in models:
                needs.setdefault(
                    name, f"route '{route.name}' uses context_overflow: {route.context_overflow}"
                )
    overflow = config.defaults.context_overflow
    if overflow in ("truncate", "summarize"):
        for name in sorted(_reachable_models(config)):
            needs.setdefault(name, f"defaults.context_overflow is {overflow}")
    return needs


def check_context_windows(r: _Report) -> None:
    """SPEC §2.3, §2.5.1: fitting input to a model needs to know the model's window."""
    needs = _window_needs(r.config)
    for name, model in r.config.models.items():
        if name in needs and model.context_window is None:
            r.warning(
                ("models", name),
                f"model '{name}' has no context_window; {needs[name]}",
                code="missing_context_window",
                at_key=True,
            )


def check_target_lists(r: _Report) -> None:
    """A target listed twice adds nothing; a weight only counts with `balance: weighted`."""
    for name, model in r.config.models.items():
        seen: dict[str, int] = {}
        for i, (target, path) in enumerate(_target_entries(name, model)):
            if target in seen:
                r.warning(
                    path,
                    f"duplicate target '{target}' in model '{name}' (also targets[{seen[target]}])",
                    code="duplicate_target",
                )
            seen.setdefault(target, i)
        if model.balance == "weighted":
            continue
        for i, entry in enumerate(model.targets):
            if isinstance(entry, TargetSpec) and "weight" in entry.model_fields_set:
                r.warning(
                    ("models", name, "targets", i, "weight"),
                    f"weight is ignored: model '{name}' balances by {model.balance}",
                    "set balance: weighted",
                    code="ignored_weight",
                )


# --- 19, 20. tests and auth ----------------------------------------------------------------------


def check_test_references(r: _Report) -> None:
    """SPEC §6: a routing test's expectations name real routes and real providers."""
    routes = [route.name for route in r.config.routes]
    for i, case in enumerate(r.config.tests):
        expect = case.expect
        if expect.route is not None and expect.route not in routes:
            r.error(
                ("tests", i, "expect", "route"),
                f"unknown route '{expect.route}'",
                did_you_mean(expect.route, routes),
                code="unknown_route",
            )
        for j, target in enumerate(expect.attempts or []):
            _check_target_string(r, target, ("tests", i, "expect", "attempts", j))


def check_auth(r: _Report) -> None:
    """SPEC §2.8: declared keys belong to known workspaces; `keys` mode needs a way in."""
    auth = r.config.auth
    declared = [*r.config.workspaces, "default"]
    for i, key in enumerate(auth.keys):
        if key.workspace not in declared:
            # A warning only: workspaces created through the admin API live in the database.
            r.warning(
                ("auth", "keys", i, "workspace"),
                f"workspace '{key.workspace}' is not declared in workspaces",
                did_you_mean(key.workspace, declared),
                code="unknown_workspace",
            )
    if "auth" in r.source.tree and auth.mode == "keys" and not auth.keys and not auth.admin_key:
        path: Path = ("auth", "mode") if r.written(("auth", "mode")) else ("auth",)
        r.warning(
            path,
            "mode is keys, but no keys are declared and admin_key is empty: only keys "
            "made with `concord keys create` can call the gateway",
            "declare auth.keys, set admin_key, or use mode: open for local development",
            code="no_callers",
            at_key=path == ("auth",),
        )


# --- 21. model patterns --------------------------------------------------------------------------


def _check_model_pattern(r: _Report, pattern: str, path: Path) -> None:
    """A model name or glob that must name at least one catalog model."""
    models = r.config.models
    if _is_glob(pattern):
        if not any(_glob_matches(pattern, m) for m in models):
            r.error(path, f"pattern '{pattern}' matches no catalog model", code="unknown_model")
    elif pattern not in models:
        r.error(
            path, f"unknown model '{pattern}'", did_you_mean(pattern, models), code="unknown_model"
        )


def check_model_patterns(r: _Report) -> None:
    """Workspace model lists and budget `when.model` select catalog models (SPEC §2.6)."""
    for name, workspace in r.config.workspaces.items():
        for i, pattern in enumerate(workspace.models or []):
            _check_model_pattern(r, pattern, ("workspaces", name, "models", i))
    for i, rule in enumerate(r.config.budgets):
        if not rule.when:
            continue
        for field_name, value, path in _conditions(rule.when, ("budgets", i, "when")):
            if field_name != "model":
                continue
            for op, operand, op_path in _operands(value, path):
                if op in EQUALITY_OPERATORS and isinstance(operand, str) and operand:
                    _check_model_pattern(r, operand, op_path)


# --- 22. params ----------------------------------------------------------------------------------


def check_params(r: _Report) -> None:
    """SPEC §2.4.2: `params.set` may force body values, but not the ones routing decides."""
    for i, route in enumerate(r.config.routes):
        if route.params is None:
            continue
        for param, owner in ROUTING_OWNED_PARAMS.items():
            if param in route.params.set:
                r.error(
                    ("routes", i, "params", "set", param),
                    f"params.set cannot force '{param}': {owner}",
                    code="params_set",
                    at_key=True,
                )


CHECKS: tuple[Check, ...] = (
    check_targets,
    check_model_references,
    check_fallback_cycles,
    check_route_self_fallback,
    check_limit_references,
    check_duplicate_names,
    check_route_actions,
    check_shadowed_routes,
    check_conditions,
    check_rate_limit_amounts,
    check_backoff,
    check_downgrades,
    check_storage,
    check_providers,
    check_prices,
    check_context_windows,
    check_target_lists,
    check_test_references,
    check_auth,
    check_model_patterns,
    check_params,
)
