"""`concord schema`: print the JSON Schema of concord.yaml (SPEC §6).

The text is identical to the checked-in `schemas/concord.schema.json`, which editors pick up
through the `# yaml-language-server: $schema=...` comment.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from concord.config.schema import schema_text

    sys.stdout.write(schema_text())
    return 0
