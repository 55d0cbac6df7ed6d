"""The `concord` command (SPEC §6): parses arguments and hands each subcommand to its module.

Each subcommand lives in `concord/commands/<name>.py` and exposes `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their subcommand runs, so `concord validate`
starts fast and never imports the server.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from concord import __version__

COMMANDS: dict[str, str] = {
    "serve": "run the gateway",
    "validate": "check config files; exit 0 valid, 1 invalid, 2 unreadable",
    "explain": "show how a request would be routed",
    "test": "run the routing tests declared under `tests:`",
    "schema": "print the JSON Schema of concord.yaml",
    "keys": "create, list and revoke client API keys",
    "workspaces": "create and list workspaces",
    "usage": "show usage totals from the database",
    "version": "print the version",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord", description="Concord LLM gateway.")
    parser.add_argument("--version", action="version", version=f"concord {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _command_module(name)
        if module is None:
            continue
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
    return parser


def _command_module(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"concord.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"concord.commands.{name}":
            return None  # not built yet
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = _command_module(args.command)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one clear line, never a traceback (SPEC §6)
        print(f"concord {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
