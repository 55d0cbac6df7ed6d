"""The access log (SPEC §7): one JSON line per request on the `concord.access` logger.

The request path only drops the finished `UsageRecord` into a queue (`QueueHandler` that skips
formatting); a `QueueListener` thread turns it into JSON and writes it, so a slow stderr or log
collector never delays a response (STYLE habit 10). The line carries ids, names, numbers and
status codes taken from the record: the record holds no prompt, no response text and no key, so
none can reach the log. `concord serve --log-level` sets the level (CONCORD_LOG_LEVEL in workers).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from concord.gateway.record import UsageRecord

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
    """The fields of one access-log line, in a stable order."""
    return {
        "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="milliseconds"),
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
        "cost_usd": round(record.cost_usd, 8),
        "latency_ms": round(record.latency_ms, 2),
        "ttft_ms": round(record.ttft_ms, 2) if record.ttft_ms is not None else None,
        "attempts": record.attempts,
        "stream": record.stream,
        "cache": getattr(record, "cache", None) or ("hit" if record.cache_hit else None),
    }


class JsonFormatter(logging.Formatter):
    """Access records as their JSON fields; anything else as {time, level, logger, message}."""

    def format(self, record: logging.LogRecord) -> str:
        usage = getattr(record, "usage", None)
        if isinstance(usage, UsageRecord):
            return orjson.dumps(access_fields(usage)).decode()
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return orjson.dumps(line).decode()


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueue the record as it is: formatting happens in the listener thread, off the loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class AccessLog:
    """A Recorder writing one JSON line per request; `start()` / `stop()` own the thread."""

    def __init__(self, level: str | None = None, stream: IO[str] | None = None) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.level = _LEVELS.get((level or os.environ.get(LEVEL_ENV) or "info").lower(), 20)
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._handler = _DeferredQueueHandler(self._queue)
        output = logging.StreamHandler(stream or sys.stderr)
        output.setFormatter(JsonFormatter())
        self._listener = logging.handlers.QueueListener(
            self._queue, output, respect_handler_level=False
        )
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self.logger.setLevel(self.level)
        self.logger.addHandler(self._handler)
        self.logger.propagate = False  # one line per request, not a second copy via the root
        self._listener.start()
        self._started = True

    def stop(self) -> None:
        """Flush what is queued and detach (shutdown: after in-flight requests finished)."""
        if not self._started:
            return
        self.logger.removeHandler(self._handler)
        self.logger.propagate = True
        self._listener.stop()
        self._started = False

    def record(self, record: UsageRecord) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("request", extra={"usage": record})
