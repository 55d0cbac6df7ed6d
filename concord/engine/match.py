"""Match conditions (SPEC §2.4.1): each `when` is compiled once into small callables.

`compile_when(raw)` returns a `Condition`: `test(ctx) -> bool` for the request path, and
`why_not(ctx) -> str | None`, the first failing condition in words, for `concord explain`
(`model: 'gpt-4o-mini' is not one of [gpt-4o, gpt-4.1]`). Regexes and globs are compiled here,
never per request. A malformed `when` raises `WhenError` with the path of the bad node, which the
compiler turns into a diagnostic.

Value semantics, shared by every field:
- a scalar means equality; strings containing `*` are globs (full match, case-sensitive);
- a list means "any of"; an operator map ANDs its operators
  (`eq ne in not_in gt gte lt lte regex exists`; `eq`/`in` compare like the scalar/list forms);
- absent values are None: `exists: false`, `ne` and `not_in` match them, every other test fails;
- numbers compare with numeric text (`header.x-tier: 2` matches the header value "2");
- `tags` matches when ANY request tag matches (a request without tags is absent).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from concord.config.errors import PathPart, did_you_mean
from concord.engine.graph import RequestContext

Test = Callable[[RequestContext], bool]
WhyNot = Callable[[RequestContext], "str | None"]
Pred = Callable[[Any], bool]

ATTR_FIELDS = (
    "endpoint",
    "model",
    "workspace",
    "key",
    "user",
    "input_tokens",
    "max_tokens",
    "temperature",
    "stream",
    "tools",
    "images",
    "budget_used",
)
FIELDS = (*ATTR_FIELDS, "tags")
COMBINATORS = ("all", "any", "not")
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "regex", "exists")
# Header values that must never be echoed by explain (SPEC §2.1: secrets are never printed).
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie"})
_Scalar = str | int | float | bool | None


class WhenError(ValueError):
    """A `when` that cannot be compiled; `path` is relative to the `when` itself."""

    def __init__(self, path: Sequence[PathPart], message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled `when`.

    `pins` maps indexable fields (see `compile_when`) to the strings, literal or `*` globs, the
    condition requires at top level; `residual` tests everything else, so a caller that has already
    checked the pins (the route index) evaluates only the rest. `residual` None = always true.
    """

    test: Test
    why_not: WhyNot
    pins: Mapping[str, frozenset[str]] = field(default_factory=dict)
    residual: Test | None = None


def compile_when(raw: Mapping[str, Any] | None, pin_fields: Sequence[str] = ()) -> Condition | None:
    """Compile a `when` map; None (or `{}`) means "always", returned as None."""
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise WhenError((), f"a condition must be a map, got {_fmt(raw)}")
    pins: dict[str, frozenset[str]] = {}
    tests: list[Test] = []
    residual: list[tuple[str, Any]] = []
    texts: list[WhyNot] = []
    for key, value in raw.items():
        test, why_not = _compile_key(str(key), value, (str(key),))  # validates the whole tree
        tests.append(test)
        texts.append(why_not)
        pinned = _pin(value) if key in pin_fields else None
        if pinned is not None:
            pins[str(key)] = pinned
        else:
            residual.append((str(key), value))
    # One generated function per condition: the residual when the index checks the pins (routes
    # only evaluate that), else the whole test. Generating costs ~50 µs, so never both.
    inline = (_inline(residual) or _closure_and(residual)) if residual else None
    test = _and(tests) if pins else inline or _and(tests)
    return Condition(test=test, why_not=_first_failure(texts), pins=pins, residual=inline)


def _closure_and(items: list[tuple[str, Any]]) -> Test:
    return _and([_compile_key(key, value, (key,))[0] for key, value in items])


def _pin(value: Any) -> frozenset[str] | None:
    """The strings (literals or `*` globs) a top-level value requires, or None for other forms."""
    if isinstance(value, Mapping) and len(value) == 1:
        op, value = next(iter(value.items()))
        if op not in ("eq", "in"):
            return None
    values = value if isinstance(value, list) else [value]
    if values and all(isinstance(v, str) for v in values):
        return frozenset(values)
    return None


# -- one generated function per condition (the hot path) ----------------------------------------


def _inline(items: list[tuple[str, Any]]) -> Test | None:
    """The AND of `items` as one generated function, or None if it cannot be generated.

    Each route's condition costs one call: common leaves become inline expressions
    (`ctx.model == _k1`, `(v := ctx.input_tokens) is not None and v > _k2`) and the rest call
    their compiled predicate. Values never appear in the source, only as named constants, and
    field names come from the fixed vocabulary, so no config text is ever evaluated as code.
    """
    emitter = _Emitter()
    try:
        source = " and ".join(emitter.key(key, value, (key,)) for key, value in items)
        return eval(f"lambda ctx: {source}", emitter.names)  # type: ignore[no-any-return]
    except (SyntaxError, RecursionError, MemoryError):  # absurdly deep trees: use closures
        return None


_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class _Emitter:
    """Builds the source of one condition; `names` holds the constants it refers to."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"__builtins__": {}}

    def const(self, value: Any) -> str:
        name = f"_k{len(self.names)}"
        self.names[name] = value
        return name

    def key(self, key: str, value: Any, path: tuple[PathPart, ...]) -> str:
        if key in ("all", "any"):
            joiner = " and " if key == "all" else " or "
            parts = [self.node(item, (*path, i)) for i, item in enumerate(value)]
            return "(" + joiner.join(parts) + ")"
        if key == "not":
            return f"(not {self.node(value, path)})"
        return self.leaf(key, value, path)

    def node(self, raw: Mapping[str, Any], path: tuple[PathPart, ...]) -> str:
        parts = [self.key(str(k), v, (*path, str(k))) for k, v in raw.items()]
        return "(" + " and ".join(parts) + ")"

    def leaf(self, name: str, value: Any, path: tuple[PathPart, ...]) -> str:
        access = self.access(name)
        if access is not None:
            if isinstance(value, str) and "*" not in value:
                return f"({access} == {self.const(value)})"
            if _plain_strings(value):
                return f"({access} in {self.const(frozenset(value))})"
            if name in NUMERIC_FIELDS and _bounds(value):
                compare = [f"v {_SYMBOLS[op]} {self.const(bound)}" for op, bound in value.items()]
                return f"((v := {access}) is not None and " + " and ".join(compare) + ")"
        test, _ = _compile_field(name, value, path)
        return f"{self.const(test)}(ctx)"

    def access(self, name: str) -> str | None:
        """Source reading a string or number field, for the inline forms; else None."""
        if name in ATTR_FIELDS:
            return f"ctx.{name}"
        if name.startswith("header.") and len(name) > len("header."):
            return f"ctx.headers.get({self.const(name[len('header.') :].lower())})"
        return None


def _plain_strings(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, str) and "*" not in v for v in value)
    )


def _bounds(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and value.keys() <= _SYMBOLS.keys()
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())
    )


# -- the when tree -------------------------------------------------------------------------------


def _compile_node(raw: Any, path: tuple[PathPart, ...]) -> tuple[Test, WhyNot]:
    """A nested `when` map (inside all/any/not): its keys are ANDed."""
    if not isinstance(raw, Mapping) or not raw:
        raise WhenError(path, f"a condition must be a non-empty map, got {_fmt(raw)}")
    parts = [_compile_key(str(key), value, (*path, str(key))) for key, value in raw.items()]
    return _and([t for t, _ in parts]), _first_failure([w for _, w in parts])


def _compile_key(key: str, value: Any, path: tuple[PathPart, ...]) -> tuple[Test, WhyNot]:
    if key == "all":
        return _compile_all(value, path)
    if key == "any":
        return _compile_any(value, path)
    if key == "not":
        return _compile_not(value, path)
    return _compile_field(key, value, path)


def _children(value: Any, path: tuple[PathPart, ...]) -> list[tuple[Test, WhyNot]]:
    if not isinstance(value, list) or not value:
        raise WhenError(path, f"expected a non-empty list of conditions, got {_fmt(value)}")
    return [_compile_node(item, (*path, i)) for i, item in enumerate(value)]


def _compile_all(value: Any, path: tuple[PathPart, ...]) -> tuple[Test, WhyNot]:
    children = _children(value, path)
    return _and([t for t, _ in children]), _first_failure([w for _, w in children])


def _compile_any(value: Any, path: tuple[PathPart, ...]) -> tuple[Test, WhyNot]:
    children = _children(value, path)
    tests = tuple(t for t, _ in children)
    texts = tuple(w for _, w in children)

    def test(ctx: RequestContext) -> bool:
        for t in tests:  # noqa: SIM110 - a plain loop beats any(<genexpr>) on the hot path
            if t(ctx):
                return True
        return False

    def why_not(ctx: RequestContext) -> str | None:
        if test(ctx):
            return None
        return "any: none matched (" + "; ".join(str(w(ctx)) for w in texts) + ")"

    return test, why_not


def _compile_not(value: Any, path: tuple[PathPart, ...]) -> tuple[Test, WhyNot]:
    inner, _ = _compile_node(value, path)
    shown = render_when(value)

    def test(ctx: RequestContext) -> bool:
        return not inner(ctx)

    def why_not(ctx: RequestContext) -> str | None:
        return f"not: {shown} matched" if inner(ctx) else None

    return test, why_not


def _and(tests: Sequence[Test]) -> Test:
    """AND of tests, specialised for the short lists routes usually have."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda ctx: first(ctx) and second(ctx)
    frozen = tuple(tests)

    def test(ctx: RequestContext) -> bool:
        for t in frozen:  # noqa: SIM110 - a plain loop beats all(<genexpr>) on the hot path
            if not t(ctx):
                return False
        return True

    return test


def _first_failure(texts: Sequence[WhyNot]) -> WhyNot:
    frozen = tuple(texts)

    def why_not(ctx: RequestContext) -> str | None:
        for text in frozen:
            failure = text(ctx)
            if failure is not None:
                return failure
        return None

    return why_not


# -- fields --------------------------------------------------------------------------------------


def _compile_field(name: str, value: Any, path: tuple[PathPart, ...]) -> tuple[Test, WhyNot]:
    getter, label, secret = _getter(name, path)
    pred, fail_text = _compile_value(value, path)
    if name == "tags":
        return _tags_leaf(pred, value)

    test = _fast_test(name, value, getter) or (lambda ctx: pred(getter(ctx)))

    hidden = sorted(_strings_in(value), key=len, reverse=True) if secret else []

    def why_not(ctx: RequestContext) -> str | None:
        actual = getter(ctx)
        if pred(actual):
            return None
        if not secret:
            return f"{label}: {_fmt(actual)} {fail_text(actual)}"
        # neither the client's value nor what the config compares it with is printed
        text = fail_text(actual)
        for operand in hidden:
            text = text.replace(operand, "***")
        return f"{label}: {'absent' if actual is None else repr('***')} {text}"

    return test, why_not


NUMERIC_FIELDS = frozenset({"input_tokens", "max_tokens", "temperature", "budget_used"})
_INLINE_COMPARE: dict[str, Callable[[Callable[[Any], Any], Any], Test]] = {
    "gt": lambda get, b: lambda ctx: (v := get(ctx)) is not None and v > b,
    "gte": lambda get, b: lambda ctx: (v := get(ctx)) is not None and v >= b,
    "lt": lambda get, b: lambda ctx: (v := get(ctx)) is not None and v < b,
    "lte": lambda get, b: lambda ctx: (v := get(ctx)) is not None and v <= b,
}


def _fast_test(name: str, value: Any, getter: Callable[[Any], Any]) -> Test | None:
    """One-closure tests for the commonest shapes; same answers as the general predicate.

    `model: gpt-4o` is one comparison (a plain string equals only an equal string), and a
    numeric field (typed int/float/None on the context) compared with a bound needs no
    conversion.
    """
    if isinstance(value, str) and "*" not in value:
        return lambda ctx: getter(ctx) == value
    if (
        name in NUMERIC_FIELDS
        and isinstance(value, Mapping)
        and value.keys() <= _INLINE_COMPARE.keys()
    ):
        tests = [_INLINE_COMPARE[op](getter, bound) for op, bound in value.items()]
        return _and(tests)
    return None


def _getter(name: str, path: tuple[PathPart, ...]) -> tuple[Callable[[Any], Any], str, bool]:
    """(value getter, label for explain, whether the value is a secret)."""
    if name in ATTR_FIELDS:
        return operator.attrgetter(name), name, False
    if name == "tags":
        return operator.attrgetter("tags"), name, False
    if name.startswith("header.") and len(name) > len("header."):
        header = name[len("header.") :].lower()
        return (lambda ctx: ctx.headers.get(header)), f"header.{header}", header in SECRET_HEADERS
    if name.startswith("metadata.") and len(name) > len("metadata."):
        return _metadata_getter(name[len("metadata.") :]), name, False
    candidates = [*FIELDS, *COMBINATORS, "header.<name>", "metadata.<name>"]
    raise WhenError(path, f"unknown condition field '{name}'", did_you_mean(name, candidates))


def _metadata_getter(dotted_name: str) -> Callable[[Any], Any]:
    """`metadata.a.b`: the key `a.b` if present as such, else `a` then `b` nested."""
    parts = tuple(dotted_name.split("."))

    def get(ctx: RequestContext) -> Any:
        node: Any = ctx.metadata
        if dotted_name in node:
            return node[dotted_name]
        for part in parts:
            if not isinstance(node, Mapping):
                return None
            node = node.get(part)
        return node

    return get


def _tags_leaf(pred: Pred, raw: Any) -> tuple[Test, WhyNot]:
    """`tags` matches when any request tag matches; no tags is an absent value."""

    def test(ctx: RequestContext) -> bool:
        tags = ctx.tags
        if not tags:
            return pred(None)
        return any(pred(tag) for tag in tags)

    wanted = render_value(raw)

    def why_not(ctx: RequestContext) -> str | None:
        if test(ctx):
            return None
        if not ctx.tags:
            return f"tags: none, expected {wanted}"
        return f"tags: no tag in {_fmt_list(sorted(ctx.tags))} matches {wanted}"

    return test, why_not


# -- values --------------------------------------------------------------------------------------

FailText = Callable[[Any], str]


def _compile_value(value: Any, path: tuple[PathPart, ...]) -> tuple[Pred, FailText]:
    """A predicate over the field's value, and the words for a failure."""
    if isinstance(value, Mapping):
        return _compile_operators(value, path)
    if isinstance(value, list):
        pred = _any_of(value, path)
        text = f"is not one of {_fmt_list(value)}"
        return pred, lambda _: text
    pred = _equals(value, path)
    text = f"does not match {_fmt(value)}" if _is_glob(value) else f"is not {_fmt(value)}"
    return pred, lambda _: text


def _compile_operators(ops: Mapping[str, Any], path: tuple[PathPart, ...]) -> tuple[Pred, FailText]:
    if not ops:
        raise WhenError(path, "an operator map needs at least one operator")
    compiled: list[tuple[Pred, str]] = []
    for op, arg in ops.items():
        op_path = (*path, str(op))
        if op not in OPERATORS:
            hint = did_you_mean(str(op), OPERATORS)
            raise WhenError(op_path, f"unknown operator '{op}'", hint)
        compiled.append(_operator(str(op), arg, op_path))
    preds = tuple(p for p, _ in compiled)

    def pred(value: Any) -> bool:
        return all(p(value) for p in preds)

    if len(preds) == 1:
        pred = preds[0]

    def fail_text(value: Any) -> str:
        for p, text in compiled:
            if not p(value):
                return text
        return "does not match"

    return pred, fail_text


def _operator(op: str, arg: Any, path: tuple[PathPart, ...]) -> tuple[Pred, str]:
    if op in ("eq", "ne"):
        eq = _equals(arg, path)
        if op == "eq":
            return eq, f"is not {_fmt(arg)}"
        return (lambda v: not eq(v)), f"is {_fmt(arg)}"
    if op in ("in", "not_in"):
        if not isinstance(arg, list):
            raise WhenError(path, f"'{op}' needs a list, got {_fmt(arg)}")
        any_of = _any_of(arg, path)
        if op == "in":
            return any_of, f"is not one of {_fmt_list(arg)}"
        return (lambda v: not any_of(v)), f"is one of {_fmt_list(arg)}"
    if op in _COMPARE:
        return _comparison(op, arg, path)
    if op == "regex":
        return _regex(arg, path)
    if not isinstance(arg, bool):
        raise WhenError(path, f"'exists' needs true or false, got {_fmt(arg)}")
    if arg:
        return (lambda v: v is not None), "is absent"
    return (lambda v: v is None), "is present"


_COMPARE: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "gt": (operator.gt, ">"),
    "gte": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "lte": (operator.le, "<="),
}


def _comparison(op: str, arg: Any, path: tuple[PathPart, ...]) -> tuple[Pred, str]:
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise WhenError(path, f"'{op}' needs a number, got {_fmt(arg)}")
    compare, symbol = _COMPARE[op]
    bound = arg

    def pred(value: Any) -> bool:
        number = as_number(value)
        return number is not None and compare(number, bound)

    return pred, f"is not {symbol} {_fmt(arg)}"


def _regex(arg: Any, path: tuple[PathPart, ...]) -> tuple[Pred, str]:
    if not isinstance(arg, str):
        raise WhenError(path, f"'regex' needs a string, got {_fmt(arg)}")
    try:
        search = re.compile(arg).search
    except re.error as exc:
        raise WhenError(path, f"invalid regex {arg!r}: {exc}") from None

    def pred(value: Any) -> bool:
        text = as_text(value)
        return text is not None and search(text) is not None

    return pred, f"does not match /{arg}/"


def _any_of(values: list[Any], path: tuple[PathPart, ...]) -> Pred:
    preds = [_equals(v, (*path, i)) for i, v in enumerate(values)]
    if all(isinstance(v, str) and "*" not in v for v in values):
        literals = frozenset(values)
        return lambda v: isinstance(v, str) and v in literals
    frozen = tuple(preds)
    return lambda v: any(p(v) for p in frozen)


def _equals(expected: Any, path: tuple[PathPart, ...]) -> Pred:
    """Equality with one scalar: globs for strings with `*`, numbers against numeric text."""
    if expected is None:
        return lambda v: v is None
    if isinstance(expected, bool):
        text = "true" if expected else "false"
        return lambda v: v is expected or (isinstance(v, str) and v.lower() == text)
    if isinstance(expected, int | float):
        return lambda v: as_number(v) == expected
    if isinstance(expected, str):
        if "*" in expected:
            match = glob_regex(expected).match
            return lambda v: isinstance(v, str) and match(v) is not None
        return lambda v: v == expected
    raise WhenError(path, f"expected a string, number, boolean or null, got {_fmt(expected)}")


def _is_glob(value: Any) -> bool:
    return isinstance(value, str) and "*" in value


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`free-*` -> a full-match regex; only `*` is special (any run of characters)."""
    return re.compile("(?s:" + ".*".join(re.escape(part) for part in pattern.split("*")) + r")\Z")


def as_number(value: Any) -> float | int | None:
    """Numbers as themselves, numeric text as a number, anything else (bools too) as None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


# -- rendering for explain -------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list | tuple | frozenset | set):
        return _fmt_list(list(value))
    return str(value)


def _fmt_list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(render_value(v) for v in values) + "]"


def render_value(value: Any) -> str:
    """A match value the way a user would write it in YAML flow style."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return _fmt_list(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_when(raw: Any) -> str:
    """A whole `when` in flow style, for explain output; what a secret header is compared
    with shows as `***` (SPEC §2.1: explain never prints a secret)."""
    return render_value(_without_secrets(raw))


def _without_secrets(when: Any) -> Any:
    if isinstance(when, list):
        return [_without_secrets(item) for item in when]
    if not isinstance(when, Mapping):
        return when
    return {
        key: _masked(value) if is_secret_field(key) else _without_secrets(value)
        for key, value in when.items()
    }


def _masked(value: Any) -> Any:
    """A condition on a secret header with its values hidden (`exists` stays: it says none)."""
    if isinstance(value, Mapping):
        return {op: v if op == "exists" else _masked(v) for op, v in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return "***" if value is not None else None


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings_in(item)]
    return []


def is_secret_field(name: str) -> bool:
    """`header.authorization` and the like: what they hold, and what a config compares them
    with, are never printed (SPEC §2.1)."""
    return name.startswith("header.") and name[len("header.") :].lower() in SECRET_HEADERS
