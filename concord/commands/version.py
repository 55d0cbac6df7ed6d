"""`concord version`."""

from __future__ import annotations

import argparse

from concord import __version__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    print(f"concord {__version__}")
    return 0
