"""`concord test [-c FILE]` (SPEC §6): run the routing tests declared under `tests:`.

Output reads like a test runner: `PASS name` / `FAIL name` with one indented line per field
that differs, then `N passed, M failed`. Exit 0 when all pass, 1 on any failure or an invalid
config (its diagnostics are printed), 2 when the file cannot be read. Each case's decision goes
through the gateway's budget step at its `budget_used` (SPEC §2.6), as `concord explain` shows it.
"""

from __future__ import annotations

import argparse
import sys

from concord.commands.validate import default_config_path
from concord.engine.graph import Graph

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $CONCORD_CONFIG, $PROXY_CONFIG_PATH or ./concord.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    graph, code = load_for_command(args.config, "test")
    if graph is None:
        return code
    from concord.commands.explain import budget_guard
    from concord.engine.testing import run_tests

    outcomes = run_tests(graph, budget_guard)
    for outcome in outcomes:
        print(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.name}")
        for diff in outcome.diffs:
            print(f"    {diff}")
    failed = sum(not o.passed for o in outcomes)
    if not outcomes:
        print("no tests declared under `tests:`")
    print(f"{len(outcomes) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def load_for_command(path: str | None, command: str) -> tuple[Graph | None, int]:
    """Load a config through the shared pipeline; on failure print why and give the exit code."""
    from concord.config.errors import ConfigUnreadable
    from concord.config.load import load

    path = path or default_config_path()
    try:
        loaded = load(path)
    except ConfigUnreadable as exc:
        print(str(exc), file=sys.stderr)
        return None, EXIT_UNREADABLE
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None, EXIT_UNREADABLE
    for diagnostic in loaded.diagnostics:
        print(diagnostic.render(), file=sys.stderr)
    if not loaded.ok or loaded.graph is None:
        print(f"concord {command}: {path} is not a valid config", file=sys.stderr)
        return None, EXIT_FAILED
    return loaded.graph, EXIT_OK
