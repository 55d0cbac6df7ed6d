"""The batched usage writer (SPEC §1: usage recorded async, batched, never lost).

`UsageWriter.record()` turns a record into a row tuple and appends it to a list. A background task
writes batches (up to `batch_size` rows, at least every `flush_interval`) with one driver-level
executemany each (`Database.insert_rows`). When a batch cannot be written, it goes to the journal
(`journal.py`). While the database is away, batches go straight to the journal; every
`retry_interval` the writer replays journal files and, once they are all in, writes directly again.
Inserts ignore duplicate ids, so a batch whose commit was in doubt can be replayed safely, and
several processes may share one journal directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from concord.records.db import Database
from concord.records.journal import Journal
from concord.records.tables import usage
from concord.records.usage_rows import Row, UsageRecord, as_row

__all__ = ["Journal", "UsageRecord", "UsageWriter"]

log = logging.getLogger("concord.records.usage")


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
        self._pending: list[Row] = []
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
        """Queue one record (a `UsageRecord` or a gateway record); never blocks, never raises.

        The row is built here, once, so the queue holds plain tuples the driver takes as they are.
        A record that cannot be stored at all (no request id, workspace or status) is logged and
        dropped: it would otherwise fail its whole batch."""
        try:
            row = as_row(record)
        except Exception as exc:
            log.error("usage record dropped: %s", exc)
            return
        self._pending.append(row)
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
                        if len(self._pending) < self._batch_size:
                            # What arrived during the write waits for the next flush: chasing it
                            # would write a handful of rows per transaction, back to back.
                            break
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the writer die: records would pile up silently
                log.exception("usage writer iteration failed")

    def _take(self) -> list[Row]:
        size = self._batch_size if self._healthy else max(self._batch_size, 5000)
        if len(self._pending) <= size:
            batch, self._pending = self._pending, []
        else:
            batch = self._pending[:size]
            del self._pending[:size]
        return batch

    async def _write_batch(self, batch: list[Row]) -> bool:
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
        claimed = self._journal.claim_all()
        for index, path in enumerate(claimed):
            try:
                batch = self._journal.read(path)
                if batch:
                    await self._insert(batch)
            except Exception as exc:
                # Give back this file and every one not tried yet: the next replay takes them.
                for unreplayed in claimed[index:]:
                    self._journal.release(unreplayed)
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

    async def _insert(self, batch: Sequence[Row]) -> None:
        await asyncio.wait_for(self._db.insert_rows(usage, batch), self._write_timeout)
        self.written += len(batch)
