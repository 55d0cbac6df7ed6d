"""Read concord.yaml with positions, includes and ${VAR} expansion (SPEC §2, §2.1, §2.9).

`read_source()` turns the root file and every file it includes into one plain tree
(dict/list/str/int/float/bool/None) plus a span map from tree paths to `file:line:col`, so every
later stage (schema, checks, compile) can point at the text the user wrote. Problems found while
reading are collected as diagnostics; only a file that cannot be read or parsed at all raises
`ConfigUnreadable`.

The stages, in order: parse each file to YAML nodes (ruamel.yaml's composer, which keeps a mark
for every key and value) → build an annotated tree, catching duplicate keys → resolve `include`
recursively and merge → expand `${VAR}` over the merged tree (so paths are the final ones) →
flatten into the plain tree and the span map.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concord.config.errors import (
    ConfigUnreadable,
    Diagnostic,
    Location,
    PathPart,
    Severity,
    dotted,
)

TreePath = tuple[PathPart, ...]

# SPEC §2.9: these top-level lists concatenate across includes; any other repeated key is an error.
CONCATENATED = frozenset({"routes", "budgets", "rate_limits", "tests"})
# Entries of these maps are named things: a second definition of one is an error, not a deep merge.
_NAMED_MAPS = frozenset({"providers", "models", "workspaces"})

_TAG = "tag:yaml.org,2002:"
_MAP_TAGS = frozenset({_TAG + "map"})
_SEQ_TAGS = frozenset({_TAG + "seq"})
_GLOB_CHARS = frozenset("*?[")

# SPEC §2.1: `$$` is a literal `$`; `${VAR}` or `${VAR:-default}`; any other `${` is malformed.
_VAR = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>:-(?P<default>[^}]*))?\}|(?P<bad>\$\{)"
)
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_BOOLS = {"true": True, "false": False}


@dataclass
class Source:
    """The merged, env-expanded tree of a config and where each of its nodes was written."""

    tree: dict[str, Any]
    files: list[str]
    diagnostics: list[Diagnostic]
    spans: dict[TreePath, tuple[Location, Location | None]] = field(default_factory=dict)
    root: str = "<config>"
    keyless_providers: frozenset[str] = frozenset()  # declared api_keys, all empty (SPEC §2.1)
    # where a quoted `"${VAR}"` expanded to a number or true/false, which stays text: a type
    # error there says to drop the quotes
    quoted_variables: frozenset[TreePath] = frozenset()
    # The values `${VAR}` expanded to, by name: a diagnostic quoting one shows the reference
    # instead (a key expanded into the wrong field must not be printed: SPEC §2.1)
    expanded: dict[str, str] = field(default_factory=dict)

    def where(self, path: TreePath | Any) -> Location:
        """Location of the value at `path`, or of its nearest existing ancestor."""
        parts = tuple(path)
        for end in range(len(parts), -1, -1):
            span = self.spans.get(parts[:end])
            if span is not None:
                return span[0]
        return Location(self.root, 1, 1)

    def key_where(self, path: TreePath | Any) -> Location:
        """Location of the mapping key at `path`; the value's location when there is no key."""
        span = self.spans.get(tuple(path))
        if span is not None and span[1] is not None:
            return span[1]
        return self.where(path)


def read_source(path: str | Path, env: Mapping[str, str] | None = None) -> Source:
    """Read `path` and everything it includes; raise ConfigUnreadable if a file cannot be parsed."""
    reader = _Reader(os.environ if env is None else env)
    shown = str(path)
    root = reader.load(Path(path), shown, chain=())
    _Expander(reader).expand(root, ())
    tree: dict[str, Any] = {}
    spans: dict[TreePath, tuple[Location, Location | None]] = {(): (root.loc, None)}
    if isinstance(root.value, dict):
        tree = _flatten(root, (), spans)
    return Source(
        tree=tree,
        files=reader.files,
        diagnostics=reader.diagnostics,
        spans=spans,
        root=shown,
        keyless_providers=frozenset(reader.keyless_providers),
        quoted_variables=frozenset(reader.quoted_variables),
        expanded=reader.expanded,
    )


# --- the annotated tree -------------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    """A value with its location; `value` is dict[str, _Member], list[_Node] or a scalar."""

    value: Any
    loc: Location
    plain: bool = False  # an unquoted scalar: `${PORT}` may become a number after expansion


@dataclass(slots=True)
class _Member:
    key_loc: Location
    node: _Node


def _flatten(
    node: _Node, path: TreePath, spans: dict[TreePath, tuple[Location, Location | None]]
) -> Any:
    if isinstance(node.value, dict):
        out: dict[str, Any] = {}
        for key, member in node.value.items():
            child = (*path, key)
            spans[child] = (member.node.loc, member.key_loc)
            out[key] = _flatten(member.node, child, spans)
        return out
    if isinstance(node.value, list):
        items: list[Any] = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            spans[child] = (item.loc, None)
            items.append(_flatten(item, child, spans))
        return items
    return node.value


# --- reading files and includes -----------------------------------------------------------------


class _Reader:
    """Reads files, resolves includes and merges them, collecting diagnostics on the way."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.files: list[str] = []
        self.diagnostics: list[Diagnostic] = []
        self.keyless_providers: set[str] = set()
        self.quoted_variables: set[TreePath] = set()
        self.expanded: dict[str, str] = {}  # ${VAR} name -> the value it expanded to
        self._loaded: dict[str, Location] = {}  # realpath -> where it was first included
        self._cwd = os.getcwd()

    def error(self, loc: Location, path: TreePath, message: str, code: str) -> None:
        self.report("error", loc, path, message, code)

    def warning(self, loc: Location, path: TreePath, message: str, code: str) -> None:
        self.report("warning", loc, path, message, code)

    def report(
        self, severity: Severity, loc: Location, path: TreePath, message: str, code: str
    ) -> None:
        self.diagnostics.append(Diagnostic(severity, loc, dotted(path), message, code=code))

    def load(self, path: Path, shown: str, chain: tuple[str, ...]) -> _Node:
        """One file merged with everything it includes (its own content first, SPEC §2.9)."""
        real = os.path.realpath(path)
        self.files.append(str(path.absolute()))
        self._loaded.setdefault(real, Location(shown, 1, 1))
        doc = _Builder(self, shown).build_document(self._read_text(path, shown))
        includes = doc.value.pop("include", None)
        if chain and "version" in doc.value:
            key_loc = doc.value.pop("version").key_loc
            self.error(key_loc, ("version",), "only the root file may set version", "include")
        if includes is not None:
            around = {real, *chain}  # a glob matching these (`*.yaml` beside the root) skips them
            for item, child_path, child_shown in self._resolve(includes, path.parent, around):
                child = self._include(item, child_path, child_shown, (*chain, real))
                if child is not None:
                    self._merge(doc, child, ())
        return doc

    def _include(self, item: _Node, path: Path, shown: str, chain: tuple[str, ...]) -> _Node | None:
        """The included file, or None when including it would loop or repeat it."""
        real = os.path.realpath(path)
        if real in chain:
            names = " -> ".join(self._show(Path(p)) for p in (*chain, real))
            self.error(item.loc, ("include",), f"include cycle: {names}", "include_cycle")
            return None
        if real in self._loaded:
            first = self._loaded[real]
            message = f"{shown} is already included (at {first}); included once"
            self.warning(item.loc, ("include",), message, "include")
            return None
        self._loaded[real] = item.loc
        return self.load(path, shown, chain)

    def _read_text(self, path: Path, shown: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problem = "no such file"
        except IsADirectoryError:
            problem = "is a directory, not a file"
        except UnicodeDecodeError:
            problem = "is not UTF-8 text"
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        diagnostic = Diagnostic(
            "error", Location(shown), "", f"cannot read: {problem}", code="unreadable"
        )
        raise ConfigUnreadable([diagnostic])

    def _resolve(
        self, includes: _Member, base: Path, around: set[str]
    ) -> list[tuple[_Node, Path, str]]:
        """The files an `include` list names, in order: each glob expanded in sorted order,
        leaving out the including file and those including it (`around`), which a glob such
        as `*.yaml` in the root's own folder matches: only a file named outright is a cycle."""
        found: list[tuple[_Node, Path, str]] = []
        for item in _include_items(includes.node):
            pattern = item.value
            if not isinstance(pattern, str) or not pattern:
                self.error(
                    item.loc,
                    ("include",),
                    "include expects a list of file paths or globs",
                    "include",
                )
                continue
            expanded = _include_entry(self, item)
            if expanded is None:
                continue
            pattern = os.path.expanduser(expanded)
            if not _GLOB_CHARS.intersection(pattern):
                target = base / pattern
                if not target.is_file():
                    self.error(
                        item.loc,
                        ("include",),
                        f"included file '{pattern}' does not exist",
                        "include",
                    )
                    continue
                found.append((item, target, self._show(target)))
                continue
            matches = sorted(glob.glob(pattern, root_dir=base, recursive=True))
            paths = [
                base / m
                for m in matches
                if (base / m).is_file() and os.path.realpath(base / m) not in around
            ]
            if not paths:
                self.warning(
                    item.loc, ("include",), f"include '{pattern}' matches no file", "include"
                )
            found.extend((item, p, self._show(p)) for p in paths)
        return found

    def _show(self, path: Path) -> str:
        """A readable name for an included file: relative to the current directory if shorter."""
        absolute = os.path.abspath(path)
        relative = os.path.relpath(absolute, self._cwd)
        return relative if len(relative) <= len(absolute) else absolute

    def _merge(self, into: _Node, other: _Node, path: TreePath) -> None:
        """Merge `other` (a later file) into `into`: maps deep, SPEC §2.9 lists concatenated."""
        for key, member in other.value.items():
            existing = into.value.get(key)
            if existing is None:
                into.value[key] = member
                continue
            child = (*path, key)
            mine, theirs = existing.node, member.node
            if (
                isinstance(mine.value, dict)
                and isinstance(theirs.value, dict)
                and not (len(path) == 1 and path[0] in _NAMED_MAPS)
            ):
                self._merge(mine, theirs, child)
            elif not path and key in CONCATENATED and _both_lists(mine, theirs):
                mine.value.extend(theirs.value)
            else:
                self.error(
                    member.key_loc,
                    child,
                    f"defined twice: here and at {existing.key_loc}",
                    "duplicate_key",
                )


def read_includes(path: str | Path, env: Mapping[str, str] | None = None) -> list[str]:
    """The `include` entries of one file, parsed and `${VAR}`-expanded exactly as `read_source`
    does: the reload watcher must follow the same includes the loader will. Raises
    ConfigUnreadable when the file cannot be read or parsed; entries the loader would reject
    are left out."""
    reader = _Reader(os.environ if env is None else env)
    shown = str(path)
    node = _Builder(reader, shown).build_top_level(reader._read_text(Path(path), shown), "include")
    if node is None:
        return []
    entries = [_include_entry(reader, item) for item in _include_items(node)]
    return [entry for entry in entries if entry]


def _include_entry(reader: _Reader, item: _Node) -> str | None:
    """One `include` entry with `${VAR}` expanded (SPEC §2.1: in any string, include paths too);
    None when it is no path or names a variable that is not set (reported to `reader`)."""
    if not isinstance(item.value, str) or not item.value:
        return None
    if "$" not in item.value:
        return item.value
    text, complete = _Expander(reader).expanded_text(item, ("include",))
    return text if complete else None


def _include_items(node: _Node) -> list[_Node]:
    """The entries of an `include` value: a list, or a single path written on its own."""
    return node.value if isinstance(node.value, list) else [node]


def _both_lists(a: _Node, b: _Node) -> bool:
    return isinstance(a.value, list) and isinstance(b.value, list)


# Deeper than any config is written; the tree builder and the composers recurse once a level.
MAX_NESTING = 200
# Parse with libyaml (ruamel.yaml.clib) when it is installed; the pure parser is the reference.
USE_LIBYAML = True


def _deepest_past(yaml: Any, text: str, limit: int) -> Any:
    """The mark of the first collection nested deeper than `limit` in `text`, or None. Reads
    the parser's events only (libyaml's parser keeps its own stack, it does not recurse)."""
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

    depth = 0
    for event in yaml.parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > limit:
                return event.start_mark
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return None


class _Builder:
    """YAML nodes of one file -> the annotated tree, reporting duplicate keys and odd tags."""

    def __init__(self, reader: _Reader, shown: str) -> None:
        self.reader = reader
        self.shown = shown
        self._constructor: Any = None

    def build_document(self, text: str) -> _Node:
        root = self._compose(text)
        if root is None:  # an empty file is an empty mapping
            return _Node({}, Location(self.shown, 1, 1))
        try:
            doc = self.build(root, ())
        except RecursionError:
            loc = self._loc(root)
            diagnostic = Diagnostic("error", loc, "", "YAML nesting is too deep", code="syntax")
            raise ConfigUnreadable([diagnostic]) from None
        if not isinstance(doc.value, dict):
            self.reader.error(
                doc.loc, (), "the top level of a config file must be a mapping", "type"
            )
            return _Node({}, doc.loc)
        return doc

    def build_top_level(self, text: str, key: str) -> _Node | None:
        """Only the value of the top-level `key` (its first definition), without building the
        rest of a config that may hold thousands of routes."""
        from ruamel.yaml.nodes import MappingNode

        root = self._compose(text)
        if not isinstance(root, MappingNode):
            return None
        for key_node, value_node in root.value:
            if key_node.tag == _TAG + "merge":  # `<<:` may bring the key: build it all
                member = self.build(root, ()).value.get(key)
                return member.node if member is not None else None
            if key_node.value == key:
                return self.build(value_node, (key,))
        return None

    def _compose(self, text: str) -> Any:
        """The YAML node tree of `text`, by libyaml's parser (ruamel.yaml.clib) when installed:
        several times faster than the pure-Python one on a large config, same nodes and marks.

        Its composer recurses in C, so a document nested deeper than `MAX_NESTING` is reported
        before it is composed. A text either parser refuses is parsed again by the pure one,
        whose error and position are the ones reported, the same with or without libyaml."""
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe")
        if USE_LIBYAML and yaml.Parser.__module__.startswith("ruamel.yaml.clib"):
            try:
                deepest = _deepest_past(yaml, text, MAX_NESTING)
                if deepest is None:
                    self._constructor = yaml.constructor
                    return yaml.compose(text)
            except Exception:  # YAMLError, or libyaml refusing text the pure parser judges
                pass
            else:
                where = Location(self.shown, deepest.line + 1, deepest.column + 1)
                message = f"YAML nesting is too deep (more than {MAX_NESTING} levels)"
                raise ConfigUnreadable([Diagnostic("error", where, "", message, code="syntax")])
        return self._compose_pure(text)

    def _compose_pure(self, text: str) -> Any:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        yaml = YAML(typ="safe", pure=True)
        self._constructor = yaml.constructor
        try:
            return yaml.compose(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            loc = (
                Location(self.shown, mark.line + 1, mark.column + 1)
                if mark
                else Location(self.shown)
            )
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigUnreadable(
                [Diagnostic("error", loc, "", f"YAML syntax error: {problem}", code="syntax")]
            ) from None
        except YAMLError as exc:
            diagnostic = Diagnostic(
                "error", Location(self.shown), "", f"YAML error: {exc}", code="syntax"
            )
            raise ConfigUnreadable([diagnostic]) from None
        except RecursionError:
            message = "YAML nesting is too deep"
            diagnostic = Diagnostic("error", Location(self.shown), "", message, code="syntax")
            raise ConfigUnreadable([diagnostic]) from None

    def _loc(self, node: Any) -> Location:
        return Location(self.shown, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Any, path: TreePath) -> _Node:
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        if isinstance(node, MappingNode):
            self._check_tag(node, _MAP_TAGS, path)
            return _Node(self._mapping(node, path), self._loc(node))
        if isinstance(node, SequenceNode):
            self._check_tag(node, _SEQ_TAGS, path)
            items = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return _Node(items, self._loc(node))
        return _Node(self._scalar(node, path), self._loc(node), plain=not node.style)

    def _mapping(self, node: Any, path: TreePath) -> dict[str, _Member]:
        members: dict[str, _Member] = {}
        merged: list[Any] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":  # `<<: *anchor`: explicit keys win
                merged.extend(value_node.value if value_node.tag in _SEQ_TAGS else [value_node])
                continue
            key_loc = self._loc(key_node)
            if not isinstance(key_node.value, str):
                self.reader.error(key_loc, path, "mapping keys must be strings", "type")
                continue
            key = key_node.value
            if key in members:
                self.reader.error(
                    key_loc,
                    (*path, key),
                    f"defined twice: here and at {members[key].key_loc}",
                    "duplicate_key",
                )
                continue
            members[key] = _Member(key_loc, self.build(value_node, (*path, key)))
        for source in merged:
            if source.tag not in _MAP_TAGS:
                self.reader.error(self._loc(source), path, "'<<' merges only mappings", "type")
                continue
            for key, member in self._mapping(source, path).items():
                members.setdefault(key, member)
        return members

    def _scalar(self, node: Any, path: TreePath) -> Any:
        tag = node.tag
        if tag in (_TAG + "str", _TAG + "timestamp"):  # timestamps stay text; pydantic parses them
            return node.value
        if tag == _TAG + "null":
            return None
        if tag in (_TAG + "bool", _TAG + "int", _TAG + "float"):
            return self._constructor.construct_object(node)
        self.reader.error(self._loc(node), path, f"unsupported YAML tag '{tag}'", "type")
        return node.value

    def _check_tag(self, node: Any, allowed: frozenset[str], path: TreePath) -> None:
        if node.tag not in allowed:
            self.reader.error(self._loc(node), path, f"unsupported YAML tag '{node.tag}'", "type")


# --- ${VAR} expansion ---------------------------------------------------------------------------


def is_secret_path(path: TreePath) -> bool:
    """Values that must never be printed (SPEC §2.1): provider keys and headers, the admin key."""
    if len(path) >= 3 and path[0] == "providers" and path[2] in ("api_keys", "headers"):
        return True
    return path[:2] == ("auth", "admin_key")


class _Expander:
    """Expands `${VAR}` in every string of the merged tree (SPEC §2.1)."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.env = reader.env

    def expand(self, node: _Node, path: TreePath) -> None:
        if isinstance(node.value, dict):
            for key, member in node.value.items():
                child = (*path, key)
                if (
                    len(child) == 3
                    and child[0] == "providers"
                    and key == "api_keys"
                    and isinstance(member.node.value, list)
                ):
                    self._api_keys(member.node, child)
                else:
                    self.expand(member.node, child)
        elif isinstance(node.value, list):
            for index, item in enumerate(node.value):
                self.expand(item, (*path, index))
        elif isinstance(node.value, str) and "$" in node.value:
            text, _ = self.expanded_text(node, path)
            node.value = self._retype(node, text, path)

    def expanded_text(self, node: _Node, path: TreePath) -> tuple[str, bool]:
        """A string node's text with `${VAR}` expanded, and whether every variable was set
        (each one that was not is reported)."""
        text, missing = self._substitute(node, path)
        for name in missing:
            self.reader.error(
                node.loc,
                path,
                f"environment variable {name} is not set (set it or write ${{{name}:-default}})",
                "env",
            )
        return text, not missing

    def _api_keys(self, node: _Node, path: TreePath) -> None:
        """SPEC §2.1: an empty key is dropped; a provider left with none is unavailable."""
        kept: list[_Node] = []
        unset: list[str] = []
        for item in node.value:
            if isinstance(item.value, str):
                item.value, blank = self._substitute(item, path, blank_ok=True)
                if not item.value.strip():
                    unset.extend(name for name in blank if name not in unset)
                    continue
            kept.append(item)
        if node.value and not kept:
            self.reader.keyless_providers.add(str(path[1]))
            why = (
                f"{', '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set"
                if unset
                else "every entry is empty"
            )
            self.reader.warning(
                node.loc,
                path,
                f"provider '{path[1]}' has no API key ({why}); it is unavailable and routes "
                "fall through to fallbacks",
                "no_api_key",
            )
        node.value = kept

    def _substitute(
        self, node: _Node, path: TreePath, blank_ok: bool = False
    ) -> tuple[str, list[str]]:
        """Expanded text, and the variables that were missing (or, with blank_ok, empty)."""
        missing: list[str] = []
        malformed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal malformed
            if match.group("bad"):
                malformed = True
                return match.group(0)
            name = match.group("name")
            if name is None:  # `$$`
                return "$"
            value = self.env.get(name)
            if blank_ok and not value:
                missing.append(name)
            if value:  # a value from the environment may be a secret: never quoted back
                self.reader.expanded[name] = value
            if match.group("sep"):
                return value if value else match.group("default")
            if value is None:
                if not blank_ok:
                    missing.append(name)
                return ""
            return value

        text = _VAR.sub(replace, node.value)
        if malformed:
            self.reader.error(
                node.loc,
                path,
                "malformed variable reference (use ${NAME}, ${NAME:-default} or $$ for a "
                "literal $)",
                "env",
            )
        return text, missing

    def _retype(self, node: _Node, text: str, path: TreePath) -> Any:
        """`port: ${PORT}` unquoted reads like the number it expands to, as if written inline."""
        whole = _VAR.fullmatch(node.value)
        if whole is None or whole.group("name") is None or is_secret_path(path):
            return text
        if not node.plain:
            if _INT.match(text) or _FLOAT.match(text) or text.lower() in _BOOLS:
                self.reader.quoted_variables.add(path)
            return text
        if _INT.match(text):
            return int(text)
        if _FLOAT.match(text):
            return float(text)
        return _BOOLS.get(text.lower(), text)
