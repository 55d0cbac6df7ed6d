"""`concord usage` (SPEC §6): usage totals from the config's database, like GET /_admin/usage."""

from __future__ import annotations

import argparse

from concord.records.commandline import (
    add_common_arguments,
    open_records,
    print_json,
    print_table,
    run_async,
)
from concord.records.queries import parse_group_by, parse_window

_TOTAL_COLUMNS = [
    ("requests", "REQUESTS"),
    ("input_tokens", "INPUT_TOKENS"),
    ("output_tokens", "OUTPUT_TOKENS"),
    ("cached_tokens", "CACHED_TOKENS"),
    ("cost_usd", "COST_USD"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--last-hours", type=float, metavar="N", help="default: 24")
    window.add_argument("--start", metavar="ISO", help="window start (ISO 8601, UTC by default)")
    parser.add_argument("--end", metavar="ISO", help="window end (default: now)")
    parser.add_argument(
        "--group-by", metavar="FIELDS", help="comma-separated: workspace,key,user,model"
    )


def run(args: argparse.Namespace) -> int:
    return run_async(lambda: _usage(args))


async def _usage(args: argparse.Namespace) -> int:
    last_hours = args.last_hours if args.last_hours is not None else None
    if last_hours is None and args.start is None and args.end is None:
        last_hours = 24
    start, end = parse_window(args.start, args.end, last_hours)
    group_by = parse_group_by(args.group_by)
    async with open_records(args) as records:
        rows = await records.usage.usage_report(start, end, group_by)
    if args.json:
        print_json({"start": start.isoformat(), "end": end.isoformat(), "data": rows})
        return 0
    print(f"Usage from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    columns = [(name, name.upper()) for name in group_by] + _TOTAL_COLUMNS
    if "key" in group_by:  # the id tells apart keys of one name in different workspaces
        columns.insert(group_by.index("key") + 1, ("key_id", "KEY ID"))
    print_table(rows, columns)
    return 0
