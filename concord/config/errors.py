"""Diagnostics: what validation found, and where.

Every problem in a config is a `Diagnostic` that knows its file, line and column, the dotted path
of the offending node, a message that names the bad value, and an optional hint ("did you mean").
Validation collects diagnostics instead of raising (SPEC §6); `ConfigError` is raised only at the
edges, when a caller needs a loaded config and there is none.

    ConfigError                 the config cannot be used; carries the diagnostics
    └── ConfigUnreadable        a file could not be read or parsed at all (exit code 2)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]
PathPart = str | int
Path = tuple[PathPart, ...]


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A position in a source file; line and column are 1-based like editors show them. Line 0:
    the file as a whole (it cannot be read, say), shown by its name alone, as compilers do."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a config."""

    severity: Severity
    location: Location
    path: str
    message: str
    hint: str | None = None
    code: str = "invalid"

    def render(self) -> str:
        """`file:line:col: dotted.path: message (hint)`, the format of SPEC §6."""
        text = f"{self.location}: {self.path or '<root>'}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.severity == "warning":
            text = text.replace(f"{self.location}: ", f"{self.location}: warning: ", 1)
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "file": self.location.file,
            "line": self.location.line,
            "col": self.location.col,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "code": self.code,
        }


@dataclass
class ConfigError(Exception):
    """The config has errors; `diagnostics` lists every one of them."""

    diagnostics: Sequence[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics) or "invalid configuration"


class ConfigUnreadable(ConfigError):
    """A file could not be read or is not YAML at all."""


def dotted(path: Iterable[PathPart]) -> str:
    """`("routes", 2, "when", "model")` -> `routes[2].when.model`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to a misspelt `name`, if one is near enough to suggest."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint such as `did you mean 'gpt-4o'?`, or None when nothing is close."""
    best = closest(name, candidates)
    return f"did you mean '{best}'?" if best else None


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Errors in file and line order, like a compiler prints them."""
    return sorted(diagnostics, key=lambda d: (d.location, d.path, d.message))
