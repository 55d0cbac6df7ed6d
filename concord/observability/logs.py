"""The access log (SPEC §7): one JSON line per request on the `concord.access` logger.

The request path only keeps the finished `UsageRecord`; a few milliseconds later the loop turns
the records gathered meanwhile into JSON lines at once and hands them, as one block, to a writer
thread, so a slow stderr or log collector never delays a response (STYLE habit 10). Formatting
on the loop costs what it would in the thread (both hold the GIL), without waking the thread and
trading the GIL with it for every line. The line carries ids, names, numbers and
status codes taken from the record: the record holds no prompt, no response text and no key, so
none can reach the log. `concord serve --log-level` sets the level (CONCORD_LOG_LEVEL in workers).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from concord.gateway.record import UsageRecord
from concord.timestamps import second_text

ACCESS_LOGGER = "concord.access"
LEVEL_ENV = "CONCORD_LOG_LEVEL"
_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


def access_fields(record: UsageRecord) -> dict[str, Any]:
    """The fields of one access-log line, in a stable order; with `server.log_bodies` the
    request and the answer too (SPEC §7), embedded as the JSON they are."""
    fields = {
        "time": _iso_millis(record.time),
        "request_id": record.request_id,
        "workspace": record.workspace,
        "key": record.key,  # the key's name, never the key
        "endpoint": record.endpoint,
        "route": record.route,
        "requested_model": record.requested_model,
        "model": record.model,
        "provider": record.provider,
        "target": record.target,
        "status": record.status,
        "error": record.error_type,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cached_tokens": record.cached_tokens,
        # 8 and 2 decimals; round(x, n) formats the float as text first: several times the cost
        "cost_usd": round(record.cost_usd * 1e8) / 1e8,
        "latency_ms": round(record.latency_ms * 100) / 100,
        "ttft_ms": round(record.ttft_ms * 100) / 100 if record.ttft_ms is not None else None,
        "attempts": record.attempts,
        "stream": record.stream,
        "cache": record.cache or ("hit" if record.cache_hit else None),
    }
    if record.request_body is not None:
        fields["request"] = _embedded(record.request_body)
        fields["response"] = _embedded(record.response_body)
    return fields


def access_line(record: UsageRecord) -> str:
    """One access-log line: `access_fields` as compact JSON."""
    return orjson.dumps(access_fields(record)).decode()


def _iso_millis(epoch: float) -> str:
    """`datetime.isoformat(timespec="milliseconds")` in UTC, formatted once per second: the
    writer thread formats thousands of lines a second, nearly all within the same few seconds."""
    second = int(epoch)
    micros = round((epoch - second) * 1e6)  # as datetime rounds a timestamp, then truncated
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return second_text(second, "T") + _MILLIS[micros // 1000]


_MILLIS = [f".{millis:03d}+00:00" for millis in range(1000)]  # a format spec costs more


def _embedded(body: bytes | None) -> Any:
    """A JSON body as the value it holds, written out again on the line: never the client's
    bytes as they came, whose line breaks would split the record and whose text could forge
    another; a body that is not JSON goes in as a string."""
    if body is None:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")


class JsonFormatter(logging.Formatter):
    """Access records as their JSON fields; anything else as {time, level, logger, message}."""

    def format(self, record: logging.LogRecord) -> str:
        usage = getattr(record, "usage", None)
        if isinstance(usage, UsageRecord):
            return access_line(usage)
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a message comes, not the one it was made with
    (a stream swapped since, as a test runner's capture is, may be closed by then)."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


OPERATIONS_LOGGER = "concord"  # every module's logger below it: reloads, database, probes...


def log_operations(level: str | None = None, stream: IO[str] | None = None) -> None:
    """Write the gateway's own messages (a reload, a warning about the config, the database
    coming back) as JSON lines beside the access log, at `concord serve --log-level`: without
    a handler, Python prints only warnings and errors, as bare text. Once per process."""
    logger = logging.getLogger(OPERATIONS_LOGGER)
    if any(getattr(handler, "concord", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter())
    handler.concord = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get((level or os.environ.get(LEVEL_ENV) or "info").lower(), 20))


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueue the record as it is: formatting happens in the writer thread, off the loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _Writer:
    """The thread that writes queued lines, several per `write()` call.

    The queue holds blocks of access-log lines formatted on the loop (the fast path) and
    `LogRecord`s (anything else logged on `concord.access`, formatted here); `None` asks the
    thread to finish what is queued and stop.
    """

    BATCH = 256  # items per write at most, so one slow write never holds many of them
    LINGER = 0.005  # seconds to let lines gather: one hand-over and write per batch, not per line

    def __init__(self, records: queue.SimpleQueue[Any], stream: IO[str]) -> None:
        self._queue = records
        self._stream = stream
        self._formatter = JsonFormatter()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="concord-access-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        records = self._queue
        while True:
            batch = [records.get()]
            if isinstance(batch[0], logging.LogRecord):
                time.sleep(self.LINGER)  # a block of lines comes gathered already
            while len(batch) < self.BATCH and not records.empty():
                batch.append(records.get_nowait())
            done = None in batch
            lines = [self._line(item) for item in batch if item is not None]
            if lines:
                self._write("\n".join(lines) + "\n")
            if done:
                return

    def _line(self, item: str | logging.LogRecord) -> str:
        if isinstance(item, str):
            return item  # lines formatted on the loop
        return self._formatter.format(item)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except Exception:  # a closed or broken stderr must not kill the thread
            pass


class AccessLog:
    """A Recorder writing one JSON line per request; `start()` / `stop()` own the thread.

    While this log's handler is the only one on `concord.access` (the usual case), a record goes
    straight onto the writer's queue: no `LogRecord` is built on the request path. Anything else
    (other handlers, other messages) takes the ordinary logging route.
    """

    def __init__(self, level: str | None = None, stream: IO[str] | None = None) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.level = _LEVELS.get((level or os.environ.get(LEVEL_ENV) or "info").lower(), 20)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._handler = _DeferredQueueHandler(self._queue)
        self._writer = _Writer(self._queue, stream or sys.stderr)
        self._gathered: list[UsageRecord] = []  # records since the last hand-over
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self.logger.setLevel(self.level)
        self.logger.addHandler(self._handler)
        self.logger.propagate = False  # one line per request, not a second copy via the root
        self._writer.start()
        self._started = True

    def stop(self) -> None:
        """Flush what is queued and detach (shutdown: after in-flight requests finished)."""
        if not self._started:
            return
        self._flush()
        self.logger.removeHandler(self._handler)
        self.logger.propagate = True
        self._writer.stop()
        self._started = False

    def record(self, record: UsageRecord) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handlers = logger.handlers
        if self._started and len(handlers) == 1 and handlers[0] is self._handler:
            self._gathered.append(record)
            if len(self._gathered) == 1:
                self._flush_soon()
        else:
            logger.info("request", extra={"usage": record})

    def _flush_soon(self) -> None:
        """Hand the gathered records over in `_Writer.LINGER` seconds (at once off the loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        loop.call_later(_Writer.LINGER, self._flush)

    def _flush(self) -> None:
        gathered, self._gathered = self._gathered, []
        if gathered:
            self._queue.put("\n".join([access_line(record) for record in gathered]))
