"""The usage journal: complete, immutable JSON-lines files of records the database did not take
yet (SPEC §1: usage is never lost).

A file is written to a temporary name, fsync'd, then renamed into place, so a file that exists is
complete. Several processes may share one directory: a file is claimed by an atomic rename
before it is replayed, and a claim left by a process that died is released after a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from concord.records.usage_rows import Row, UsageRecord, as_row, row_from_json, row_to_json


class Journal:
    """Complete, immutable JSON-lines files of records the database did not take yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq = 0

    async def append(self, batch: Sequence[Row | UsageRecord]) -> Path:
        """Write `batch` (rows, or records) as one new file; returns once the file and its name
        are on disk."""
        rows = [r if type(r) is tuple else as_row(r) for r in batch]
        self._seq += 1
        name = f"usage-{time.time_ns()}-{os.getpid()}-{self._seq}.jsonl"
        return await asyncio.to_thread(self._write_file, name, rows)

    def _write_file(self, name: str, batch: Sequence[Row]) -> Path:
        # Serialised here, in the worker thread: rows are immutable tuples.
        text = "".join(json.dumps(row_to_json(r), separators=(",", ":")) + "\n" for r in batch)
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

    def read(self, path: Path) -> list[Row]:
        with open(path, encoding="utf-8") as handle:
            return [row_from_json(json.loads(line)) for line in handle if line.strip()]

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
