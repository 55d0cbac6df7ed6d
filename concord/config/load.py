"""The one loading pipeline: `validate`, `explain`, `test` and `serve` all call `load()` (STYLE 12).

    read_source   YAML with positions, includes, ${VAR}          (config/source.py)
    schema        JSON Schema of the raw tree                     (config/schema.py)
    model         pydantic `Config` of what was written           (config/model.py)
    checks        references, cycles, shadowed routes             (config/checks.py)
    compile       `Config` -> immutable `Graph`                   (engine/compile.py)

Each stage runs only if the one before it left no errors, and all diagnostics are collected, so
a file that `concord validate` accepts is exactly a file the server can run (Caddy's rule).
`load()` never raises for a bad config; only an unreadable file raises `ConfigUnreadable`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from concord.config.errors import ConfigError, Diagnostic, dotted, sort_diagnostics
from concord.config.model import Config
from concord.config.schema import schema_diagnostics
from concord.config.source import Source, TreePath, is_secret_path, read_source

if TYPE_CHECKING:
    from concord.engine.graph import Graph

# Parts of the tree that do not change what the gateway does, so not part of its version.
_UNVERSIONED = ("tests", "include")


@dataclass
class Loaded:
    """Everything one load found: the stages' outputs (None past the first failing stage)."""

    source: Source | None
    config: Config | None
    graph: Graph | None
    diagnostics: list[Diagnostic]
    version: str
    files: list[str]
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Loaded:
    """Read, validate and compile `path`; diagnostics say what is wrong and where."""
    source = read_source(path, env)
    version = config_version(source.tree)
    # A value already reported while reading (an unset ${VAR}) is not reported again as a type.
    reported = {d.path for d in source.diagnostics if d.severity == "error"}
    diagnostics = [
        *source.diagnostics,
        *(d for d in schema_diagnostics(source) if d.path not in reported),
    ]
    config = _build_model(source, diagnostics) if not _has_errors(diagnostics) else None
    graph = None
    if config is not None:
        run_checks = _optional("concord.config.checks", "run_checks")
        if run_checks is not None:
            diagnostics.extend(run_checks(config, source))
        compile_graph = _optional("concord.engine.compile", "compile_graph")
        if compile_graph is not None and not _has_errors(diagnostics):
            try:
                graph = compile_graph(config, source=source, version=version)
            except ConfigError as exc:
                diagnostics.extend(exc.diagnostics)
                graph = None
    return Loaded(
        source=source,
        config=config,
        graph=graph,
        diagnostics=sort_diagnostics(_masked(diagnostics, source.expanded)),
        version=version,
        files=list(source.files),
        base_dir=Path(path).absolute().parent,
    )


def load_graph(path: str | Path, env: Mapping[str, str] | None = None) -> Graph:
    """The compiled graph of `path`; raises ConfigError listing every problem if there is none."""
    graph, _ = load_serving(path, env)
    return graph


def load_serving(
    path: str | Path, env: Mapping[str, str] | None = None
) -> tuple[Graph, tuple[str, ...]]:
    """The compiled graph of `path` and its warnings, rendered (a provider left without keys,
    say: the server logs them as it starts); raises ConfigError if there is no graph."""
    loaded = load(path, env)
    if not loaded.ok or loaded.graph is None:
        raise ConfigError(loaded.errors or loaded.diagnostics)
    return loaded.graph, tuple(d.render() for d in loaded.warnings)


def config_version(tree: Mapping[str, Any]) -> str:
    """SPEC §4: first 12 hex digits of the SHA-256 of the resolved, env-expanded config."""
    resolved = {k: v for k, v in tree.items() if k not in _UNVERSIONED}
    canonical = json.dumps(
        resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


# Expanded values shorter than this are left in messages: too short to be a secret, and common
# enough ("8080", "true") that replacing them would garble unrelated text.
MASK_MIN_LENGTH = 6


def _masked(diagnostics: list[Diagnostic], expanded: Mapping[str, str]) -> list[Diagnostic]:
    """Diagnostics that quote a value `${VAR}` expanded to show `${VAR}` instead: a key put in
    the wrong field must not reach validate's output or a CI log (SPEC §2.1)."""
    values = sorted(
        ((value, name) for name, value in expanded.items() if len(value) >= MASK_MIN_LENGTH),
        key=lambda pair: -len(pair[0]),  # longest first: one value may contain another
    )
    if not values:
        return diagnostics
    out = []
    for diagnostic in diagnostics:
        message, hint = diagnostic.message, diagnostic.hint
        for value, name in values:
            message = message.replace(value, f"${{{name}}}")
            hint = hint.replace(value, f"${{{name}}}") if hint else hint
        if message != diagnostic.message or hint != diagnostic.hint:
            diagnostic = replace(diagnostic, message=message, hint=hint)
        out.append(diagnostic)
    return out


def _has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """A later stage that may not exist yet; a module that exists but fails to import is a bug."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def _build_model(source: Source, diagnostics: list[Diagnostic]) -> Config | None:
    """The pydantic model; its errors are rare after the schema check but located all the same."""
    try:
        return Config.model_validate(source.tree)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            path = _tree_path(source.tree, error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if is_secret_path(path):
                message = "invalid value"
            diagnostics.append(
                Diagnostic("error", source.where(path), dotted(path), message, code="model")
            )
        return None


def _tree_path(tree: Any, loc: tuple[Any, ...]) -> TreePath:
    """A pydantic error location without its union-branch labels (`str`, `function-before[...]`)."""
    path: list[str | int] = []
    node = tree
    for part in loc:
        if isinstance(node, dict):
            found = part in node
        else:
            found = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if found:
            node = node[part]
            path.append(part)
    return tuple(path)
