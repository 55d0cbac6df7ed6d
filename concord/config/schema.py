"""The JSON Schema layer: check the raw tree against the schema generated from the model (SPEC §2).

Every jsonschema error becomes a `Diagnostic` at the exact `file:line:col` of the offending key or
value, in words a user can act on: `unknown field 'modle'` with a did-you-mean, `'10q' is not a
duration`, `missing required field 'providers'`. For `anyOf`/`oneOf` failures the branch the value
was evidently aiming at is reported instead of "not valid under any of the given schemas".
Values under secret paths (SPEC §2.1) are described by their type, never printed.

The same schema, serialised by `schema_text()`, is the checked-in `schemas/concord.schema.json`.
Its rules marked `SEMANTIC` are left out here: the later stages report them in their own words.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concord.config.errors import Diagnostic, did_you_mean, dotted
from concord.config.model import SEMANTIC, TEMPLATABLE, json_schema
from concord.config.source import Source, TreePath, is_secret_path
from concord.config.values import DURATION_PATTERN, SIZE_PATTERN

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

# The generated schema ships inside the package (read at start-up instead of regenerating it from
# the pydantic models, which costs a tenth of a second); schemas/concord.schema.json links to it.
PACKAGED_SCHEMA = Path(__file__).resolve().parent / "concord.schema.json"
SCHEMA_FILE = PACKAGED_SCHEMA

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_PATTERN_WORDS = {
    DURATION_PATTERN: ("a duration", "use 250ms, 30s, 10m, 1h or 1d"),
    SIZE_PATTERN: ("a size", "use 512KiB, 8MiB or a number of bytes"),
    r"^[0-9a-f]{64}$": ("a SHA-256 digest", "64 lower-case hex characters"),
}
_BRANCHING = ("anyOf", "oneOf")
_MISMATCH = ("type", "const")  # at a branch's own level: the value is not this branch's kind


def schema_text() -> str:
    """The schema as checked in: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schema_file(path: str | Path | None = None) -> Path:
    """Write `schema_text()` to `path` (default: the repository's schemas/concord.schema.json)."""
    target = Path(path) if path is not None else SCHEMA_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target


@functools.cache
def validator() -> Draft202012Validator:
    """Built once per process: compiling the schema costs more than checking a file with it."""
    from jsonschema import Draft202012Validator

    try:
        schema = json.loads(PACKAGED_SCHEMA.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        schema = json_schema()
    return Draft202012Validator(without_semantic_rules(schema))


def without_semantic_rules(node: Any) -> Any:
    """`node` without its `allOf` entries marked SEMANTIC, and its numbers and flags without
    the `${VAR}` spelling an editor must allow (values are expanded before this check).

    pydantic, config/checks.py or the `when` compiler reports each of those rules with a message
    and hint of its own, and only runs once the schema passes: left in, they would replace those
    messages and hide every other problem of the file behind the first one.
    """
    if isinstance(node, list):
        return [without_semantic_rules(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _untemplated(node)  # after expansion a number is a number again: type errors stay
    out = {key: without_semantic_rules(value) for key, value in node.items() if key != "allOf"}
    kept = [rule for rule in node.get("allOf", ()) if not _is_semantic(rule)]
    if kept:
        out["allOf"] = without_semantic_rules(kept)
    return out


def without_variable_spelling(node: Any) -> Any:
    """`node` with its numbers and flags as the config's model types them (the reference)."""
    if isinstance(node, list):
        return [without_variable_spelling(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: without_variable_spelling(value) for key, value in _untemplated(node).items()}


def _untemplated(node: dict[str, Any]) -> dict[str, Any]:
    """A TEMPLATABLE node without the `${VAR}` string it also allows."""
    if not node.get(TEMPLATABLE):
        return node
    plain = {key: value for key, value in node.items() if key not in (TEMPLATABLE, "pattern")}
    kinds = [kind for kind in node["type"] if kind != "string"]
    plain["type"] = kinds[0] if len(kinds) == 1 else kinds
    return plain


def _is_semantic(rule: Any) -> bool:
    return isinstance(rule, dict) and rule.get("$comment") == SEMANTIC


def schema_diagnostics(source: Source) -> list[Diagnostic]:
    """Every schema violation in `source.tree`, each located precisely; duplicates removed."""
    found: dict[tuple[Any, ...], Diagnostic] = {}
    explainer = _Explainer(source)
    for error in _drop_shadowed(list(validator().iter_errors(source.tree))):
        for diagnostic in explainer.explain(error):
            found.setdefault((diagnostic.location, diagnostic.path, diagnostic.message), diagnostic)
    return list(found.values())


def show(value: Any, secret: bool = False) -> str:
    """A value as a message quotes it; under a secret path only its kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if secret:
        return _TYPE_WORDS[_json_type(value)]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"'{text}'"
    return str(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _choices(values: Iterable[Any]) -> str:
    return ", ".join(str(v) if isinstance(v, str) else show(v) for v in values)


class _Explainer:
    """Turns one jsonschema error (and its sub-errors) into located diagnostics."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def explain(self, error: ValidationError) -> Iterator[Diagnostic]:
        path: TreePath = tuple(error.absolute_path)
        if error.validator in _BRANCHING:
            yield from self._branching(error, path)
            return
        handler = getattr(self, f"_on_{error.validator}", None)
        if handler is not None:
            yield from handler(error, path)
            return
        yield self._at(path, self._generic(error, path))

    def _at(
        self,
        path: TreePath,
        message: str,
        hint: str | None = None,
        code: str = "schema",
        key: bool = False,
    ) -> Diagnostic:
        loc = self.source.key_where(path) if key else self.source.where(path)
        if code == "type" and hint is None and path in self.source.quoted_variables:
            hint = "in quotes a variable stays text: write it unquoted to read a number or bool"
        return Diagnostic("error", loc, dotted(path), message, hint, code)

    # --- anyOf / oneOf: report the branch the value was aiming at ----------------------------

    def _branching(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        branches = _group_by_branch(error)
        if not branches:  # oneOf matched more than one branch
            yield self._at(path, f"{show(error.instance, is_secret_path(path))} is ambiguous")
            return
        aimed = [errors for errors in branches if _compatible(errors)]
        if not aimed:
            expected = _join_or(_dedupe(d for errs in branches for d in _describe(errs)))
            shown = show(error.instance, is_secret_path(path))
            yield self._at(path, f"expected {expected}, got {shown}", code="type")
            return
        # The branch whose complaint is most specific: deepest, then fewest errors.
        best = max(aimed, key=lambda errs: (max(len(e.relative_path) for e in errs), -len(errs)))
        for sub in _drop_shadowed(best):
            yield from self.explain(sub)

    # --- one handler per JSON Schema keyword -------------------------------------------------

    def _on_additionalProperties(
        self, error: ValidationError, path: TreePath
    ) -> Iterator[Diagnostic]:
        schema = error.schema
        allowed = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in instance:
            if key in allowed or any(p.search(key) for p in patterns):
                continue
            hint = did_you_mean(key, allowed)
            if hint is None and allowed and len(allowed) <= 12:
                hint = "expected one of " + ", ".join(allowed)
            yield self._at(
                (*path, key), f"unknown field '{key}'", hint, code="unknown_field", key=True
            )

    def _on_required(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        instance = error.instance if isinstance(error.instance, dict) else {}
        for name in error.validator_value:
            if name not in instance:
                yield self._at(path, f"missing required field '{name}'", code="required")

    def _on_type(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        expected = _join_or(_expected(error))
        shown = show(error.instance, is_secret_path(path))
        yield self._at(path, f"expected {expected}, got {shown}", code="type")

    def _on_enum(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        options = list(error.validator_value)
        secret = is_secret_path(path)
        hint = None
        if isinstance(error.instance, str) and not secret:
            hint = did_you_mean(error.instance, [o for o in options if isinstance(o, str)])
        message = f"{show(error.instance, secret)} is not one of {_choices(options)}"
        yield self._at(path, message, hint, code="enum")

    def _on_const(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        shown = show(error.instance, is_secret_path(path))
        yield self._at(path, f"expected {show(error.validator_value)}, got {shown}", code="enum")

    def _on_pattern(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        what, hint = _PATTERN_WORDS.get(error.validator_value, (None, None))
        shown = show(error.instance, is_secret_path(path))
        if what is None:
            message = f"{shown} does not match the pattern {error.validator_value}"
        else:
            message = f"{shown} is not {what}"
        yield self._at(path, message, hint, code="pattern")

    def _on_minimum(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._bound(error, path, "at least")

    def _on_maximum(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._bound(error, path, "at most")

    def _on_exclusiveMinimum(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._bound(error, path, "greater than")

    def _on_exclusiveMaximum(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._bound(error, path, "less than")

    def _bound(self, error: ValidationError, path: TreePath, relation: str) -> Diagnostic:
        shown = show(error.instance, is_secret_path(path))
        return self._at(path, f"must be {relation} {error.validator_value}, got {shown}")

    def _on_minItems(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._size(error, path, "at least", "item")

    def _on_maxItems(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._size(error, path, "at most", "item")

    def _on_minLength(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._size(error, path, "at least", "character")

    def _on_maxLength(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._size(error, path, "at most", "character")

    def _on_minProperties(self, error: ValidationError, path: TreePath) -> Iterator[Diagnostic]:
        yield self._size(error, path, "at least", "entry")

    def _size(self, error: ValidationError, path: TreePath, relation: str, unit: str) -> Diagnostic:
        count = error.validator_value
        if relation == "at least" and count == 1:
            return self._at(path, "must not be empty")
        plural = unit if count == 1 else ("entries" if unit == "entry" else unit + "s")
        return self._at(path, f"must have {relation} {count} {plural}")

    def _generic(self, error: ValidationError, path: TreePath) -> str:
        if is_secret_path(path):
            return f"invalid value (fails the '{error.validator}' rule)"
        return error.message


# --- helpers for branch selection ----------------------------------------------------------------


def _group_by_branch(error: ValidationError) -> list[list[ValidationError]]:
    groups: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        groups.setdefault(sub.relative_schema_path[0], []).append(sub)
    return [groups[index] for index in sorted(groups)]


def _compatible(errors: list[ValidationError]) -> bool:
    """False when the value is not even the kind of thing this branch describes."""
    for sub in errors:
        if sub.relative_path:
            continue
        if sub.validator in _MISMATCH:
            return False
        if sub.validator in _BRANCHING and not any(
            _compatible(errs) for errs in _group_by_branch(sub)
        ):
            return False
    return True


def _describe(errors: list[ValidationError]) -> list[str]:
    """What a mismatched branch expected, in words: `a mapping`, `false`, `a duration`."""
    words: list[str] = []
    for sub in errors:
        if not sub.relative_path:
            words.extend(_expected(sub))
    return words


def _expected(error: ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator in _BRANCHING:
        return [word for errs in _group_by_branch(error) for word in _describe(errs)]
    if "const" in schema:
        return [show(schema["const"])]
    if "enum" in schema:
        return ["one of " + _choices(schema["enum"])]
    if error.validator != "type":
        return []
    pattern = schema.get("pattern")
    if pattern in _PATTERN_WORDS:
        return [_PATTERN_WORDS[pattern][0]]
    types = error.validator_value
    return [_TYPE_WORDS.get(name, name) for name in ([types] if isinstance(types, str) else types)]


def _drop_shadowed(errors: list[ValidationError]) -> list[ValidationError]:
    """Where a value has the wrong type, its other complaints (enum, pattern...) are noise."""
    wrong_type = {tuple(e.relative_path) for e in errors if e.validator == "type"}
    return [e for e in errors if e.validator == "type" or tuple(e.relative_path) not in wrong_type]


def _dedupe(words: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(words))
    return [w for w in out if w != "null"] or out


def _join_or(words: list[str]) -> str:
    words = _dedupe(words)
    if len(words) <= 1:
        return words[0] if words else "a valid value"
    return ", ".join(words[:-1]) + " or " + words[-1]
