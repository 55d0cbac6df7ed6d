"""`concord keys create|list|revoke` (SPEC §6): client keys, straight on the config's database.

`revoke` takes a key id, `--user USER [--workspace W]` (every active key of a user) or
`--key VALUE` (the key with that value, found by its hash; `-` reads it from stdin, away from the
shell history)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from concord.records.commandline import (
    CommandError,
    add_common_arguments,
    open_records,
    print_json,
    print_table,
    run_async,
)
from concord.records.queries import parse_time

IMPLICIT_WORKSPACES = frozenset({"default"})
_LIST_COLUMNS = [
    ("id", "ID"),
    ("name", "NAME"),
    ("workspace", "WORKSPACE"),
    ("user", "USER"),
    ("prefix", "KEY"),
    ("status", "STATUS"),
    ("created_at", "CREATED"),
    ("expires_at", "EXPIRES"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="issue a key (printed once)")
    create.add_argument("--workspace", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--user")
    create.add_argument("--tag", action="append", default=[], help="repeatable")
    create.add_argument(
        "--expires", metavar="WHEN", help="ISO 8601 time, or a duration from now such as 30d"
    )
    listing = sub.add_parser("list", help="list keys (never the key itself)")
    listing.add_argument("--workspace")
    listing.add_argument("--user")
    revoke = sub.add_parser(
        "revoke",
        help="revoke a key by id, every key of a user, or the key with a given value; "
        "they stop working within a second",
    )
    revoke.add_argument("id", nargs="?", help="the key's id")
    revoke.add_argument("--user", help="instead of an id: every active key of this user")
    revoke.add_argument("--workspace", help="with --user: only this workspace's keys")
    revoke.add_argument(
        "--key", metavar="VALUE", help="instead of an id: the key itself (- reads it from stdin)"
    )
    for action in (create, listing, revoke):
        add_common_arguments(action, nested=True)


def run(args: argparse.Namespace) -> int:
    return run_async(lambda: _ACTIONS[args.action](args))


async def _create(args: argparse.Namespace) -> int:
    expires_at = _expiry(args.expires) if args.expires else None
    async with open_records(args) as records:
        if args.workspace not in IMPLICIT_WORKSPACES:
            await records.workspaces.get(args.workspace)
        record, plaintext = await records.keys.create(
            args.workspace, args.name, user=args.user, tags=args.tag, expires_at=expires_at
        )
    if args.json:
        print_json({**record.to_json(), "key": plaintext})
        return 0
    print(f"Created key {record.id} ({record.name}) for workspace {record.workspace}.")
    print(f"Key: {plaintext}")
    print("Store it now: it is not shown again.", file=sys.stderr)
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with open_records(args) as records:
        keys = await records.keys.list(args.workspace, user=args.user)
    rows = [record.to_json() for record in keys]
    if args.json:
        print_json({"data": rows})
    else:
        print_table([{**row, **_short_times(row)} for row in rows], _LIST_COLUMNS)
    return 0


def _short_times(row: dict[str, object]) -> dict[str, object]:
    """`2025-06-18 12:00` rather than full ISO timestamps, so the table stays narrow."""
    return {
        name: str(row[name])[:16].replace("T", " ")
        for name in ("created_at", "expires_at")
        if row.get(name)
    }


async def _revoke(args: argparse.Namespace) -> int:
    given = [form for form, value in (("ID", args.id), ("--user", args.user),
             ("--key", args.key)) if value is not None]  # fmt: skip
    if len(given) != 1:
        raise CommandError("give one of ID, --user USER or --key VALUE")
    if args.workspace is not None and args.user is None:
        raise CommandError("--workspace narrows --user only")
    if args.id is not None:
        async with open_records(args) as records:
            record = await records.keys.revoke(args.id)
        if args.json:
            print_json(record.to_json())
        else:
            print(f"Revoked key {record.id} ({record.name}, workspace {record.workspace}).")
        return 0
    value = sys.stdin.readline().strip() if args.key == "-" else args.key
    async with open_records(args) as records:
        if args.user is not None:
            revoked = await records.keys.revoke_user(args.user, workspace=args.workspace)
        else:
            revoked = [await records.keys.revoke_value(value)]
    if args.json:
        print_json({"data": [record.to_json() for record in revoked]})
        return 0
    for record in revoked:
        owner = f", user {record.user}" if record.user else ""
        print(f"Revoked key {record.id} ({record.name}, workspace {record.workspace}{owner}).")
    return 0


def _expiry(value: str) -> datetime:
    from concord.config.values import parse_duration

    try:
        moment = datetime.now(UTC) + timedelta(seconds=parse_duration(value))
    except ValueError:
        moment = parse_time(value, "--expires")
    if moment <= datetime.now(UTC):  # `0d` too: a key that never works is a mistake
        raise CommandError("--expires must be in the future")
    return moment


_ACTIONS = {"create": _create, "list": _list, "revoke": _revoke}
