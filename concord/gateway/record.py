"""Usage records and where they go (SPEC §1: usage recorded async, batched, never lost).

The handler builds one `UsageRecord` per request and hands it to a `Recorder`; `record()` must not
block (the database writer queues and batches). `NullRecorder` is the default, `MemoryRecorder`
keeps records in a list for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, eq=True)
class UsageRecord:
    """One finished request. Not frozen: a frozen dataclass sets each of its fields through
    `object.__setattr__`, a cost paid on every request; nothing changes a record once built."""

    request_id: str
    time: float  # epoch seconds at the start of the request
    workspace: str
    key: str | None
    user: str | None
    requested_model: str
    model: str | None  # the catalog model that served it
    provider: str | None
    target: str | None
    route: str | None
    endpoint: str
    status: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    cache_hit: bool = False
    cache: str | None = None  # "hit", "miss" or "bypass"; None when no cache policy applied
    attempts: int = 0
    stream: bool = False
    error_type: str | None = None
    key_id: str | None = None  # database keys: the id admin lists show (SPEC §5)
    budgets: str | None = None  # ",name,name,": the `budgets[]` with a `when` it was charged to
    # `server.log_bodies` (SPEC §7): the client's request and the JSON answer, as sent
    request_body: bytes | None = None
    response_body: bytes | None = None


class Recorder(Protocol):
    def record(self, record: UsageRecord) -> None:
        """Take ownership of one record without blocking the event loop."""
        ...


class NullRecorder:
    def record(self, record: UsageRecord) -> None:
        return None


class MemoryRecorder:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, record: UsageRecord) -> None:
        self.records.append(record)
