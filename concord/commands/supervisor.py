"""The process supervisor of `concord serve --workers N` (SPEC §4, §6).

uvicorn's own supervisor answers SIGHUP with a rolling restart: every worker is replaced by a new
process, which drops what each worker holds in memory (rate-limit counters, the response cache,
circuit breakers with the memory state backend) and, with an invalid file on disk, cannot start
its replacements at all. Concord's reload is in place (SPEC §4: read, validate, compile, swap;
state survives), so this supervisor passes SIGHUP on to every worker instead, and each reloads
the config itself exactly as a single-process server does.
"""

from __future__ import annotations

import contextlib
import os
import signal

from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from concord.observability.metrics import forget_worker


class ReloadingSupervisor(Multiprocess):
    """uvicorn's `Multiprocess`; SIGHUP is passed on to the workers, never restarts them, and the
    listening socket is closed here before the workers are told to stop."""

    def terminate_all(self) -> None:
        """Graceful shutdown: every worker closes its copy of the listening socket when told to
        stop, but this process's copy would keep it open while they drain, so the kernel would
        go on accepting connections nobody serves (reset after the drain). Closed first, new
        connections are refused at once and a client or balancer can go elsewhere."""
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def keep_subprocess_alive(self) -> None:
        """uvicorn replaces a worker that died; its live gauges (circuit state, config version)
        are dropped with it, or the scrape would go on reporting them."""
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                forget_worker(pid)

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)


def serve_workers(config: Config) -> None:
    """Bind the socket and run `config.workers` workers until SIGINT or SIGTERM."""
    sock = config.bind_socket()
    try:
        ReloadingSupervisor(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
