"""`concord validate [FILE...] [--format text|json] [--strict]` (SPEC §6).

Runs exactly the loader the server uses (`concord.config.load`), so a file that validates here
loads there. Exit 0 when every file is valid, 1 when any is invalid, 2 when any is unreadable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from concord.config.errors import Diagnostic

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="config files (default: $CONCORD_CONFIG, $PROXY_CONFIG_PATH or ./concord.yaml)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")


def default_config_path() -> str:
    """SPEC §3.1, §6: $CONCORD_CONFIG, then V0's $PROXY_CONFIG_PATH, then ./concord.yaml."""
    return os.environ.get("CONCORD_CONFIG") or os.environ.get("PROXY_CONFIG_PATH") or "concord.yaml"


@dataclass
class FileResult:
    """The outcome of validating one root file."""

    file: str
    version: str | None = None
    unreadable: bool = False
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def valid(self) -> bool:
        return not self.unreadable and not self.errors

    def summary(self) -> str:
        if self.unreadable:
            return f"{self.file}: unreadable"
        warnings = _count(len(self.warnings), "warning")
        if self.valid:
            return f"{self.file}: valid" + (f" ({warnings})" if self.warnings else "")
        text = f"{self.file}: {_count(len(self.errors), 'error')}"
        return text + (f", {warnings}" if self.warnings else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.valid,
            "unreadable": self.unreadable,
            "version": self.version,
            "errors": [d.as_dict() for d in self.errors],
            "warnings": [d.as_dict() for d in self.warnings],
        }


def validate_file(path: str, strict: bool = False) -> FileResult:
    """Load one file through the shared pipeline; with `strict`, warnings become errors."""
    from concord.config.errors import ConfigUnreadable
    from concord.config.load import load

    try:
        loaded = load(path)
    except ConfigUnreadable as exc:
        return FileResult(path, unreadable=True, diagnostics=list(exc.diagnostics))
    diagnostics = loaded.diagnostics
    if strict:
        diagnostics = [dataclasses.replace(d, severity="error") for d in diagnostics]
    return FileResult(path, version=loaded.version, diagnostics=diagnostics)


def run(args: argparse.Namespace) -> int:
    results = [validate_file(path, args.strict) for path in args.files or [default_config_path()]]
    if args.format == "json":
        print(json.dumps({"files": [r.as_dict() for r in results]}, indent=2))
    else:
        for result in results:
            for diagnostic in result.diagnostics:
                print(diagnostic.render())
            print(result.summary())
    if any(r.unreadable for r in results):
        return EXIT_UNREADABLE
    return EXIT_VALID if all(r.valid for r in results) else EXIT_INVALID


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
