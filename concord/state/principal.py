"""Who a request is charged to, for per-key/workspace/user/global limits and budgets."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import quote

PrincipalIds = Mapping[str, str | None]
"""`{"key": ..., "workspace": ..., "user": ...}`; a missing or None id means "not known"."""


# Before a database key's id in `key_ident`: it cannot be mistaken for a declared key's name.
KEY_ID_PREFIX = "id:"


def key_ident(name: str | None, key_id: str | None) -> str | None:
    """Who per-key limits and budgets count against (SPEC §2.6, §2.7): a database key by its id
    (names repeat across workspaces), a declared key by its name, unique in the config. The
    usage log's rebuild of spend reads the same from its key_id and key_name columns."""
    return KEY_ID_PREFIX + key_id if key_id else name


def scope_id(per: str, ids: PrincipalIds) -> str | None:
    """The id a rule with scope `per` counts against, or None when the request has none.

    A request without an end-user id (or without a key, in `auth.mode: open`) is not counted by
    per-user (per-key) rules at all: lumping such requests into one shared "anonymous" bucket
    would let one client throttle every other one. Per-key limits cover unidentified users.
    """
    if per == "global":
        return "*"
    value = ids.get(per)
    return value if value else None


@lru_cache(maxsize=8192)  # the same few principals ask again and again: skip the escaping
def state_key(kind: str, rule_name: str, per: str, ident: str) -> str:
    """A backend key for one rule and principal; names and ids are escaped so none can collide."""
    return f"{kind}:{quote(rule_name, safe='')}:{per}:{quote(ident, safe='')}"
