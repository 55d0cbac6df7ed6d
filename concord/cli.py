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
    "import": "convert another gateway's config (litellm) into concord.yaml",
    "version": "print the version",
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only `chosen`'s module is imported, so each command starts fast."""
    parser = argparse.ArgumentParser(prog="concord", description="Concord LLM gateway.")
    parser.add_argument("--version", action="version", version=f"concord {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _command_module(name)
            if module is not None:
                module.add_arguments(command_parser)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _command_module(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"concord.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"concord.commands.{name}":
            return None  # not built yet
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_command(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = _command_module(args.command)
    if module is None:
        print(f"concord {args.command}: not available in this build", file=sys.stderr)
        return 2
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
