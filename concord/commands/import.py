"""`concord import litellm FILE [-o OUT]`: turn another gateway's config into concord.yaml.

The converter (`concord.litellm_import`) is pure; this command reads the file, writes the result
(stdout by default) and then runs the same loader `concord validate` uses on it, reporting any
problem on stderr so the user knows what to fix before serving it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from concord.litellm_import import convert

SOURCES = ("litellm",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=SOURCES, help="the gateway the config comes from")
    parser.add_argument("file", help="its config file (a LiteLLM proxy config.yaml)")
    parser.add_argument("-o", "--output", help="write concord.yaml here (default: stdout)")


def run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
        source = YAML(typ="safe").load(text)
    except (OSError, YAMLError) as exc:
        print(f"concord import: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(source, dict):
        print(f"concord import: {args.file} is not a LiteLLM config (a mapping)", file=sys.stderr)
        return 2
    result = convert(source)
    if args.output:
        Path(args.output).write_text(result, encoding="utf-8")
    else:
        sys.stdout.write(result)
    return _check(result, args.output or "<stdout>")


def _check(text: str, shown_as: str) -> int:
    """Validate the output as `concord validate` would; 1 when it has errors."""
    from concord.config.load import load

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "concord.yaml"
        path.write_text(text, encoding="utf-8")
        loaded = load(path)
    for diagnostic in loaded.diagnostics:
        rendered = diagnostic.render().replace(str(path), shown_as)
        print(f"concord import: {rendered}", file=sys.stderr)
    if not loaded.ok:
        print(
            "concord import: the converted config has errors (see above); "
            "most often an environment variable is missing",
            file=sys.stderr,
        )
        return 1
    return 0
