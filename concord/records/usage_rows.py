"""Usage records as row tuples: the one shape the usage writer queues, inserts and journals.

A row holds one value per column of the `usage` table, in `COLUMNS` order, so a batch goes to the
driver as it is (SPEC §1: recording must stay cheap on the request path). `as_row` accepts this
module's `UsageRecord` or a gateway record carrying the same meaning under other names (`time` in
epoch seconds for `ts`, `key` for `key_name`, `model` for `served_model`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import sqlalchemy as sa

from concord.records.tables import usage

Row = tuple[Any, ...]

COLUMNS: tuple[str, ...] = tuple(column.name for column in usage.columns)
_TS = COLUMNS.index("ts")
_ID = COLUMNS.index("id")
# Where a column's value may be found in a record, in order of preference.
_SOURCES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "time"),
    "key_name": ("key_name", "key"),
    "served_model": ("served_model", "model"),
}


def new_id() -> str:
    """32 hex digits: the row's primary key, which makes replays idempotent. The first 16 are the
    time in nanoseconds, so new rows land at the end of the key's index instead of at random
    places in it: on a table of half a million rows, SQLite inserts cost a third of what they
    cost with random keys (PostgreSQL's B-tree gains alike). The last 16 are random, so
    processes writing at the same instant do not collide; `random` (reseeded in forked
    workers) spares a syscall per row, since the id must be unique, not unguessable."""
    return (time.time_ns() << 64 | _bits(64)).to_bytes(16, "big").hex()  # ~half a format spec


_bits = random.getrandbits


@dataclass(slots=True)
class UsageRecord:
    """One request, as stored in the `usage` table."""

    request_id: str
    workspace: str
    status: int
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    key_id: str | None = None
    key_name: str | None = None
    user: str | None = None
    requested_model: str | None = None
    served_model: str | None = None
    provider: str | None = None
    route: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cache_hit: bool = False
    attempts: int = 1
    error_type: str | None = None
    budgets: str | None = None  # ",name,name,": the conditional budgets charged
    id: str = field(default_factory=new_id)

    @classmethod
    def coerce(cls, record: Any) -> UsageRecord:
        """This class, built from anything `as_row` accepts."""
        if isinstance(record, cls):
            return record
        return cls(**dict(zip(COLUMNS, as_row(record), strict=True)))

    def to_row(self) -> Row:
        """The values in `COLUMNS` order."""
        return _record_values(self)

    def to_json(self) -> dict[str, Any]:
        return row_to_json(self.to_row())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRecord:
        return cls.coerce(row_from_json(data))


_record_values = attrgetter(*COLUMNS)


def _default(name: str) -> Any:
    default = UsageRecord.__dataclass_fields__[name].default
    return None if default is MISSING else default


# What a column holds when a record leaves it out (or None): UsageRecord's defaults.
_DEFAULTS: Row = tuple(_default(name) for name in COLUMNS)
_REQUIRED = tuple(
    (i, name)
    for i, name in enumerate(COLUMNS)
    if not usage.c[name].nullable and _DEFAULTS[i] is None and name not in ("ts", "id")
)
# Text columns and their lengths: a client-chosen request id or model name that does not fit, or
# holds a NUL (PostgreSQL refuses both), must not make its whole batch unwritable.
_TEXT = tuple(
    (i, getattr(usage.c[name].type, "length", None) or 1 << 30)
    for i, name in enumerate(COLUMNS)
    if isinstance(usage.c[name].type, sa.String)
)


@dataclass(frozen=True, slots=True)
class _Reader:
    """Reads a record type's attributes into a row in one C call (`attrgetter`)."""

    get: attrgetter[Any]
    positions: tuple[int, ...]
    sources: tuple[str, ...]  # the attribute read for each position


_readers: dict[type, _Reader | None] = {}
# Record types with a row builder of their own, by type: the gateway's record (`_gateway_row`).
_builders: dict[type, Callable[[Any], Row]] = {}


def as_row(record: Any) -> Row:
    """The row for `record`: missing values take UsageRecord's defaults, `ts` becomes a UTC
    datetime, a record without an id gets a fresh one, and text is cut to its column's length.
    Raises ValueError when a required value (request_id, workspace, status) is missing."""
    kind = type(record)
    build = _builders.get(kind)
    if build is not None:  # the gateway's record: first, for it comes with every request
        return build(record)
    if kind is UsageRecord:
        row: Row = _record_values(record)
        return row if _fits(row) else _fitted(list(row))
    reader = _readers.get(kind, MISSING)
    if reader is MISSING:
        reader = _readers[kind] = _reader_for(kind)
        if isinstance(reader, _Reader) and reader.sources == _GATEWAY_SOURCES:
            _builders[kind] = _gateway_row
            return _gateway_row(record)
    if isinstance(reader, _Reader) and reader.positions == _ALL_BUT_ID:
        return _complete_row(reader.get(record))
    values = list(_DEFAULTS)
    if isinstance(reader, _Reader):
        for index, value in zip(reader.positions, reader.get(record), strict=True):
            if value is not None:
                values[index] = value
    else:
        get = record.get if isinstance(record, dict) else lambda n: getattr(record, n, None)
        for index, name in enumerate(COLUMNS):
            for source in _SOURCES.get(name, (name,)):
                value = get(source)
                if value is not None:
                    values[index] = value
                    break
    return _finished(values)


def _finished(values: list[Any]) -> Row:
    """The last fix-ups of every row: required values present, `ts` a UTC datetime, an id, and
    text cut to its column's length."""
    for index, name in _REQUIRED:
        if values[index] is None:
            raise ValueError(f"usage record without {name}")
    ts = values[_TS]
    if ts is None:
        values[_TS] = datetime.now(UTC)
    elif isinstance(ts, int | float):
        values[_TS] = datetime.fromtimestamp(ts, UTC)
    if values[_ID] is None:
        values[_ID] = new_id()
    row = tuple(values)
    return row if _fits(row) else _fitted(values)


_ALL_BUT_ID = tuple(i for i in range(len(COLUMNS)) if i != _ID)
# Columns whose default is not None: a record's None there takes the default.
_FILL = tuple((i, d) for i, d in enumerate(_DEFAULTS) if d is not None)
_from_epoch = datetime.fromtimestamp
_time_ns = time.time_ns
# The attributes of the gateway's record (concord.gateway.record), in column order: every column
# but `id`, `ts` as `time`, `key_name` as `key`, `served_model` as `model`.
_GATEWAY_SOURCES = (
    "request_id", "time", "workspace", "key_id", "key", "user", "requested_model", "model",
    "provider", "route", "status", "input_tokens", "output_tokens", "cost_usd", "latency_ms",
    "cache_hit", "attempts", "error_type", "cached_tokens", "ttft_ms", "budgets",
)  # fmt: skip
_read_gateway = attrgetter(*_GATEWAY_SOURCES)
# The shape `_gateway_row` is written for: the columns, in order, with the lengths of the text
# ones (`_TEXT`) and the defaults of the others (`_FILL`). A new column or length changes these
# and stops the import here, instead of letting the fast path write rows of the old shape.
_GATEWAY_ROW_SHAPE = (
    ("id", "request_id", "ts", "workspace", "key_id", "key_name", "user", "requested_model",
     "served_model", "provider", "route", "status", "input_tokens", "output_tokens", "cost_usd",
     "latency_ms", "cache_hit", "attempts", "error_type", "cached_tokens", "ttft_ms", "budgets"),
    ((0, 32), (1, 64), (3, 200), (4, 32), (5, 200), (6, 200), (7, 200), (8, 200), (9, 200),
     (10, 200), (18, 100), (21, 1 << 30)),
    ((12, 0), (13, 0), (14, 0.0), (16, False), (17, 1), (19, 0)),
)  # fmt: skip
if (COLUMNS, _TEXT, _FILL) != _GATEWAY_ROW_SHAPE:  # pragma: no cover - a schema change
    raise RuntimeError("the usage table changed: update usage_rows._gateway_row to match")


def _gateway_row(r: Any) -> Row:
    """`as_row` for the gateway's record, which comes with every request (SPEC §1: recording
    stays cheap on the request path). A record needing none of the general path's fix-ups but
    the id and `ts` (required values present, no None for a defaulted column, `time` an epoch
    float, text that fits: nearly every one) is checked and built in one pass, its attributes
    read by the interpreter's specialised slot access (several times faster than `attrgetter`'s
    generic lookups); any other takes `_complete_row`. Both give the same row (tests pin it)."""
    request_id = r.request_id
    ts = r.time
    workspace = r.workspace
    key_id = r.key_id
    key_name = r.key
    user = r.user
    requested_model = r.requested_model
    served_model = r.model
    provider = r.provider
    route = r.route
    status = r.status
    input_tokens = r.input_tokens
    output_tokens = r.output_tokens
    cost_usd = r.cost_usd
    cache_hit = r.cache_hit
    attempts = r.attempts
    error_type = r.error_type
    cached_tokens = r.cached_tokens
    budgets = r.budgets
    if (
        type(ts) is float
        and status is not None
        and input_tokens is not None
        and output_tokens is not None
        and cost_usd is not None
        and cache_hit is not None
        and attempts is not None
        and cached_tokens is not None
        # `_fits`, unrolled: required text present, every text a str of its column's length at
        # most and without NUL (the id is made here, 32 hex digits)
        and (type(request_id) is str and len(request_id) <= 64 and "\x00" not in request_id)
        and (type(workspace) is str and len(workspace) <= 200 and "\x00" not in workspace)
        and (key_id is None or (type(key_id) is str and len(key_id) <= 32 and "\x00" not in key_id))
        and (
            key_name is None
            or (type(key_name) is str and len(key_name) <= 200 and "\x00" not in key_name)
        )
        and (user is None or (type(user) is str and len(user) <= 200 and "\x00" not in user))
        and (
            requested_model is None
            or (
                type(requested_model) is str
                and len(requested_model) <= 200
                and "\x00" not in requested_model
            )
        )
        and (
            served_model is None
            or (
                type(served_model) is str
                and len(served_model) <= 200
                and "\x00" not in served_model
            )
        )
        and (
            provider is None
            or (type(provider) is str and len(provider) <= 200 and "\x00" not in provider)
        )
        and (route is None or (type(route) is str and len(route) <= 200 and "\x00" not in route))
        and (
            error_type is None
            or (type(error_type) is str and len(error_type) <= 100 and "\x00" not in error_type)
        )
        and (
            budgets is None
            or (type(budgets) is str and len(budgets) <= 1 << 30 and "\x00" not in budgets)
        )
    ):
        return (
            (_time_ns() << 64 | _bits(64)).to_bytes(16, "big").hex(),  # new_id(), inlined
            request_id, _from_epoch(ts, UTC), workspace, key_id, key_name, user,
            requested_model, served_model, provider, route, status, input_tokens, output_tokens,
            cost_usd, r.latency_ms, cache_hit, attempts, error_type, cached_tokens, r.ttft_ms,
            budgets,
        )  # fmt: skip
    return _complete_row(_read_gateway(r))


def _complete_row(read: tuple[Any, ...]) -> Row:
    """The row of a record type that holds every column but `id` (the gateway's record): one
    attrgetter call, then only the fix-ups `as_row`'s general path would make."""
    values = [None, *read]
    for index, default in _FILL:
        if values[index] is None:
            values[index] = default
    return _finished(values)


def _fits(row: Row) -> bool:
    for index, length in _TEXT:
        value = row[index]
        if value is not None and (type(value) is not str or len(value) > length or "\x00" in value):
            return False
    return True


def _fitted(values: list[Any]) -> Row:
    for index, length in _TEXT:
        value = values[index]
        if value is not None:
            values[index] = str(value).replace("\x00", "")[:length]
    return tuple(values)


def _reader_for(kind: type) -> _Reader | None:
    """A reader for types whose attributes are fixed by the class (dataclasses, slots), else
    None: their instances are read attribute by attribute."""
    names = set(getattr(kind, "__dataclass_fields__", ()))
    for klass in kind.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    if not names:
        return None
    positions, sources = [], []
    for index, name in enumerate(COLUMNS):
        source = next((s for s in _SOURCES.get(name, (name,)) if s in names), None)
        if source is not None:
            positions.append(index)
            sources.append(source)
    if len(sources) < 2:  # attrgetter of one name returns the bare value, not a tuple
        return None
    return _Reader(attrgetter(*sources), tuple(positions), tuple(sources))


def row_to_json(row: Row) -> dict[str, Any]:
    """The journal's form of a row: column names to values, `ts` in ISO 8601."""
    data = dict(zip(COLUMNS, row, strict=True))
    ts = data["ts"]
    data["ts"] = ts.isoformat() if isinstance(ts, datetime) else ts
    return data


def row_from_json(data: dict[str, Any]) -> Row:
    """A journalled row back; columns a journal file lacks take their defaults."""
    ts = data.get("ts")
    if isinstance(ts, str):
        data = {**data, "ts": datetime.fromisoformat(ts)}
    return as_row(data)
