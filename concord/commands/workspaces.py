"""`concord workspaces create|list` (SPEC §6, §2.6), straight on the config's database."""

from __future__ import annotations

import argparse

from concord.records.commandline import (
    CommandError,
    add_common_arguments,
    open_records,
    print_json,
    print_table,
    run_async,
)
from concord.records.workspaces import ON_EXCEED, PERIODS, Budget, WorkspaceRecord

_LIST_COLUMNS = [
    ("name", "NAME"),
    ("source", "SOURCE"),
    ("budget", "BUDGET"),
    ("spend_usd", "SPEND_USD"),
    ("tags", "TAGS"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a workspace in the database")
    create.add_argument("name")
    create.add_argument("--budget", type=float, metavar="USD", help="spend limit per period")
    create.add_argument("--period", choices=PERIODS, default="month")
    create.add_argument("--on-exceed", choices=ON_EXCEED, default="block")
    create.add_argument("--downgrade-to", metavar="MODEL")
    create.add_argument("--tag", action="append", default=[], help="repeatable")
    listing = sub.add_parser("list", help="list workspaces with current-period spend")
    for action in (create, listing):
        add_common_arguments(action, nested=True)


def run(args: argparse.Namespace) -> int:
    return run_async(lambda: _ACTIONS[args.action](args))


async def _create(args: argparse.Namespace) -> int:
    budget = None
    if args.budget is not None:
        budget = Budget(args.budget, args.period, args.on_exceed, args.downgrade_to)
    elif args.downgrade_to or args.on_exceed != "block" or args.period != "month":
        raise CommandError("--period, --on-exceed and --downgrade-to need --budget")
    async with open_records(args) as records:
        record = await records.workspaces.create(args.name, budget, args.tag, models=records.models)
    if args.json:
        print_json(record.to_json())
    else:
        print(f"Created workspace {record.name} ({_budget_text(record) or 'no budget'}).")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with open_records(args) as records:
        found = await records.workspaces.list()
    if args.json:
        print_json({"data": [r.to_json() for r in found]})
        return 0
    rows = [{**r.to_json(), "budget": _budget_text(r)} for r in found]
    print_table(rows, _LIST_COLUMNS)
    return 0


def _budget_text(record: WorkspaceRecord) -> str | None:
    budget = record.budget
    if budget is None:
        return None
    text = f"${budget.limit_usd:g}/{budget.period} {budget.on_exceed}"
    return f"{text}→{budget.downgrade_to}" if budget.downgrade_to else text


_ACTIONS = {"create": _create, "list": _list}
