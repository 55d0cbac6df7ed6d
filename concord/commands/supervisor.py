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


class ReloadingSupervisor(Multiprocess):
    """uvicorn's `Multiprocess`; SIGHUP is passed on to the workers, never restarts them."""

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
