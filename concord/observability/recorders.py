"""Several recorders behind the one `Recorder` seam (database writer, metrics, access log)."""

from __future__ import annotations

import logging

from concord.gateway.record import NullRecorder, Recorder, UsageRecord

log = logging.getLogger("concord.observability")


class FanOutRecorder:
    """Hands each record to every recorder in order; one failing never starves the others."""

    def __init__(self, recorders: list[Recorder]) -> None:
        self.recorders = recorders

    def record(self, record: UsageRecord) -> None:
        for recorder in self.recorders:
            try:
                recorder.record(record)
            except Exception:
                log.exception("recorder %s failed", type(recorder).__name__)


def join(*recorders: Recorder) -> Recorder:
    """One recorder feeding all of `recorders`, flattening fan-outs and dropping null ones."""
    flat: list[Recorder] = []
    for recorder in recorders:
        if isinstance(recorder, FanOutRecorder):
            flat.extend(recorder.recorders)
        elif not isinstance(recorder, NullRecorder):
            flat.append(recorder)
    if len(flat) == 1:
        return flat[0]
    return FanOutRecorder(flat) if flat else NullRecorder()
