"""`concord serve`: run the gateway under uvicorn (SPEC §6).

uvloop and httptools are used when installed. With `--workers N` uvicorn imports the app in each
worker through `concord.gateway.app:app_from_env`, the config path travelling in $CONCORD_CONFIG,
under a supervisor that passes SIGHUP on to the workers (`supervisor.py`); `--reload` (for working
on Concord itself) imports it the same way in one process that uvicorn restarts when a file of
the `concord` package changes.
An invalid config prints its diagnostics and exits 1 before anything listens.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

GRACEFUL_SHUTDOWN = 30.0  # seconds in-flight requests and streams get to finish


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        help="config file (default: $CONCORD_CONFIG, $PROXY_CONFIG_PATH, ./concord.yaml)",
    )
    parser.add_argument("--host", help="listen address (default: server.host)")
    parser.add_argument("--port", type=int, help="listen port (default: server.port)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart when Concord's own code changes (development; one process); the config "
        "file is hot-reloaded with or without it",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )


def config_path(explicit: str | None) -> str:
    """SPEC §3.1, §6: -c, then $CONCORD_CONFIG, then $PROXY_CONFIG_PATH, then ./concord.yaml."""
    return (
        explicit
        or os.environ.get("CONCORD_CONFIG")
        or os.environ.get("PROXY_CONFIG_PATH")
        or "concord.yaml"
    )


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from concord.config.errors import ConfigError
    from concord.config.load import load_serving
    from concord.engine.reload import LISTEN_ENV
    from concord.gateway.app import CONFIG_ENV, create_app_from_graph
    from concord.gateway.assemble import assemble
    from concord.observability.logs import LEVEL_ENV, log_operations
    from concord.observability.metrics import prepare_multiprocess_dir, remove_own_multiprocess_dir

    path = str(Path(config_path(args.config)).absolute())
    try:
        graph, warnings = load_serving(path)
    except ConfigError as exc:
        print(f"concord serve: {path} is not a valid configuration:", file=sys.stderr)
        for diagnostic in exc.diagnostics:
            print(f"  {diagnostic.render()}", file=sys.stderr)
        return 1
    options = {
        "host": args.host or graph.server.host,
        "port": args.port if args.port is not None else graph.server.port,
        "log_level": args.log_level,
        "loop": "uvloop" if _installed("uvloop") else "asyncio",
        "http": "httptools" if _installed("httptools") else "h11",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
        "access_log": args.log_level in ("debug", "trace"),
        # X-Forwarded-For/-Proto only rewrite the client address and scheme, which Concord never
        # reads: uvicorn's own access log (debug and trace) is the one place they show, so only
        # then is the per-request middleware worth its frame on every await of the request.
        "proxy_headers": args.log_level in ("debug", "trace"),
        "server_header": False,
    }
    os.environ[LEVEL_ENV] = args.log_level  # SPEC §7: the access log's level, in every worker
    if args.reload:  # the app is imported in a child process that uvicorn restarts on changes
        import concord

        os.environ[CONFIG_ENV] = path
        if args.workers > 1:
            print("concord serve: --reload runs one process; --workers is ignored", file=sys.stderr)
        code = str(Path(concord.__file__).parent)
        uvicorn.run(
            "concord.gateway.app:app_from_env", factory=True, reload=True, reload_dirs=[code],
            **options,
        )  # fmt: skip
    elif args.workers > 1:
        from concord.commands.supervisor import serve_workers

        os.environ[CONFIG_ENV] = path
        os.environ[LISTEN_ENV] = f"{graph.server.host}:{graph.server.port}"  # what is bound now
        metrics_dir = prepare_multiprocess_dir()  # SPEC §7: every worker's metrics in one place
        config = uvicorn.Config(
            "concord.gateway.app:app_from_env", factory=True, workers=args.workers, **options
        )
        try:
            serve_workers(config)
        finally:
            remove_own_multiprocess_dir(metrics_dir)
    else:
        log_operations(args.log_level)  # the gateway's own messages as JSON lines
        seams = assemble(graph, path, None, warnings)  # reload watcher, admin API (`create_app`)
        uvicorn.run(create_app_from_graph(graph, config_path=path, **seams), **options)
    return 0
