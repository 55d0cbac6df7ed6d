"""Usage records and the batched writer (SPEC §1: usage recorded async, batched, never lost).

`UsageWriter.record()` only appends to a list. A background task writes batches (up to
`batch_size` rows, at least every `flush_interval`) with one executemany each. When a batch cannot
be written, it goes to the journal: a JSON-lines file under `journal_dir`, written to a temporary
name, fsync'd, then renamed into place, so a file that exists is complete. While the database is
away, batches go straight to the journal; every `retry_interval` the writer replays journal files
and, once they are all in, writes directly again. Inserts ignore duplicate ids, so a batch whose
commit was in doubt can be replayed safely, and several processes may share one journal
directory (a file is claimed by an atomic rename before it is replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from concord.records.db import Database
from concord.records.tables import usage

log = logging.getLogger("concord.records.usage")


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
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def coerce(cls, record: Any) -> UsageRecord:
        """Accept this class or a gateway record with the same meaning under other names
        (`time` epoch seconds for `ts`, `key` for `key_name`, `model` for `served_model`)."""
        if isinstance(record, cls):
            return record
        get = record.get if isinstance(record, dict) else lambda n, d=None: getattr(record, n, d)
        ts = get("ts") or get("time")
        if isinstance(ts, int | float):
            ts = datetime.fromtimestamp(ts, UTC)
        values = {f.name: get(f.name) for f in fields(cls) if get(f.name) is not None}
        values["ts"] = ts or datetime.now(UTC)
        values.setdefault("key_name", get("key"))
        values.setdefault("served_model", get("model"))
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["ts"] = self.ts.isoformat()
        return row

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRecord:
        data = dict(data)
        data["ts"] = datetime.fromisoformat(data["ts"])
        return cls(**data)


class UsageWriter:
    """Takes usage records without blocking and gets them into the database eventually."""

    def __init__(
        self,
        database: Database,
        journal_dir: Path | str,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        retry_interval: float = 2.0,
        write_timeout: float = 10.0,
    ) -> None:
        self._db = database
        self._journal = Journal(Path(journal_dir))
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._write_timeout = write_timeout
        self._pending: list[Any] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one writer of the database at a time
        self._healthy = True
        self._closing = False
        self._next_replay = 0.0
        self.written = 0  # rows that reached the database (metrics, tests)
        self.journalled = 0  # rows that went to the journal

    @property
    def healthy(self) -> bool:
        """False while the database refuses writes and records go to the journal."""
        return self._healthy

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, record: UsageRecord | Any) -> None:
        """Queue one record; never blocks, never raises on a database problem."""
        self._pending.append(record)
        if len(self._pending) >= self._batch_size:
            self._wakeup.set()

    async def start(self) -> None:
        """Start the background writer and replay anything a previous run journalled."""
        if self._task is None:
            self._journal.recover_stale_claims()
            self._closing = False
            self._next_replay = 0.0
            self._task = asyncio.create_task(self._run(), name="concord-usage-writer")

    async def flush(self) -> None:
        """Write (or journal) everything queued so far; used before reports and at close."""
        async with self._lock:
            while self._pending:
                if not await self._write_batch(self._take()):
                    break

    async def aclose(self) -> None:
        """Stop the background task, then write or journal whatever is still queued."""
        if self._task is not None:
            # Never cancel mid-write: a batch taken off the queue would be lost.
            self._closing = True
            self._wakeup.set()
            await self._task
            self._task = None
        await self.flush()
        if self._pending:
            log.error("%d usage records could not be written nor journalled", len(self._pending))

    async def replay_journal(self) -> int:
        """Insert every journalled record; returns how many rows were replayed."""
        async with self._lock:
            return await self._replay()

    # -- internals ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)
            self._wakeup.clear()
            try:
                async with self._lock:
                    if time.monotonic() >= self._next_replay:
                        await self._replay()
                    while self._pending:
                        if not await self._write_batch(self._take()):
                            break
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the writer die: records would pile up silently
                log.exception("usage writer iteration failed")

    def _take(self) -> list[UsageRecord]:
        size = self._batch_size if self._healthy else max(self._batch_size, 5000)
        batch, self._pending = self._pending[:size], self._pending[size:]
        return [UsageRecord.coerce(r) for r in batch]

    async def _write_batch(self, batch: list[UsageRecord]) -> bool:
        """Database, else journal; False (batch queued again) when neither took it."""
        if self._healthy:
            try:
                await self._insert(batch)
                return True
            except Exception as exc:
                self._mark_unhealthy(exc)
        try:
            await self._journal.append(batch)
        except OSError as exc:
            log.error("usage journal write failed: %s", exc)
            self._pending[:0] = batch
            return False
        self.journalled += len(batch)
        return True

    async def _replay(self) -> int:
        replayed = 0
        for path in self._journal.claim_all():
            try:
                batch = self._journal.read(path)
                if batch:
                    await self._insert(batch)
            except Exception as exc:
                self._journal.release(path)
                self._mark_unhealthy(exc)
                return replayed
            self._journal.done(path)
            replayed += len(batch)
        if replayed or not self._healthy:
            log.info("usage database reachable again; replayed %d journalled records", replayed)
        self._healthy = True
        self._next_replay = time.monotonic() + self._retry_interval
        return replayed

    def _mark_unhealthy(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning(
                "usage database write failed (%s); journalling to %s",
                type(exc).__name__,
                self._journal.directory,
            )
        self._healthy = False
        self._next_replay = time.monotonic() + self._retry_interval

    async def _insert(self, batch: Sequence[UsageRecord]) -> None:
        rows = [r.to_row() for r in batch]
        statement = self._db.insert_ignoring_duplicates(usage)

        async def write() -> None:
            async with self._db.begin() as conn:
                await conn.execute(statement, rows)

        await asyncio.wait_for(write(), self._write_timeout)
        self.written += len(rows)


class Journal:
    """Complete, immutable JSON-lines files of records the database did not take yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq = 0

    async def append(self, batch: Iterable[UsageRecord]) -> Path:
        lines = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in batch)
        self._seq += 1
        name = f"usage-{time.time_ns()}-{os.getpid()}-{self._seq}.jsonl"
        return await asyncio.to_thread(self._write_file, name, lines)

    def _write_file(self, name: str, text: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / name
        temp = self.directory / (name + ".tmp")
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        _fsync_dir(self.directory)
        return final

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("usage-*.jsonl"))

    def claim_all(self) -> list[Path]:
        """Rename every ready file to a claimed name; a file another process claimed is skipped."""
        claimed = []
        suffix = f".claimed-{os.getpid()}"
        for path in self.files():
            target = path.with_name(path.name + suffix)
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue
            claimed.append(target)
        return claimed

    def read(self, path: Path) -> list[UsageRecord]:
        with open(path, encoding="utf-8") as handle:
            return [UsageRecord.from_json(json.loads(line)) for line in handle if line.strip()]

    def release(self, path: Path) -> None:
        """Give a claimed file back (its replay failed): the next replay picks it up."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, path.with_name(path.name.rsplit(".claimed-", 1)[0]))

    def done(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def recover_stale_claims(self, older_than: float = 60.0) -> int:
        """Release claims left by a process that died mid-replay (inserts are idempotent)."""
        if not self.directory.is_dir():
            return 0
        count = 0
        for path in self.directory.glob("usage-*.jsonl.claimed-*"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > older_than:
                    self.release(path)
                    count += 1
        return count


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
