"""Hot reload (SPEC §4): watch the config's files, recompile off the loop, swap one reference.

    file event / SIGHUP / POST /_admin/config/reload
        → fingerprint of the watched files (skip when nothing changed)
        → `load()` in a worker thread (the pipeline `concord validate` runs)
        → ok: `state.set_graph(new)`; error: keep serving the old graph, report file:line:col

What is watched: the DIRECTORIES holding the root file, every included file (and its symlink
target), and the fixed part of every `include` glob, non-recursively. Watching directories rather
than files is what catches editors that save by rename, a Kubernetes ConfigMap swapping its
`..data` symlink, and a new file that starts matching an include glob. Events are filtered to the
paths that matter, and a content fingerprint turns a spurious event into a no-op.

Requests already in flight keep the graph they read at their start (gateway/handlers.py), so the
swap never changes a request half-way. Listeners (`add_listener`) see every outcome: the metrics
subsystem counts `concord_config_reload_total{result=...}` from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from starlette.routing import BaseRoute
from watchfiles import Change, awatch

from concord.config.errors import ConfigUnreadable, Diagnostic, Location
from concord.config.load import Loaded, load
from concord.config.source import read_includes

if TYPE_CHECKING:
    from concord.engine.graph import Graph
    from concord.gateway.app import GatewayState

log = logging.getLogger("concord.reload")

Trigger = Literal["startup", "watch", "signal", "admin"]
Result = Literal["ok", "error"]
Listener = Callable[["ReloadOutcome"], None]

# watchfiles: yield once writes have been quiet for STEP ms, and at the latest after DEBOUNCE ms
# of continuous writes. Keeps write-to-new-behaviour well under the 500 ms target.
STEP_MS = 50
DEBOUNCE_MS = 300
_GLOB_CHARS = frozenset("*?[")
_MISSING = b"\x00missing\x00"


def iso(at: float) -> str:
    """A wall-clock time as ISO 8601 UTC with milliseconds (what the admin API shows)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload did. `changed`: a new graph was swapped in (its version differs)."""

    result: Result
    trigger: Trigger
    at: float
    version: str
    changed: bool = False
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "trigger": self.trigger,
            "at": iso(self.at),
            "version": self.version,
            "changed": self.changed,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "duration_ms": round(self.duration_ms, 1),
        }


# ---- what to watch -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchSet:
    """The files a config is made of, the include globs that may add more, and their dirs."""

    files: frozenset[str] = frozenset()  # as the loader named them (absolute)
    links: frozenset[str] = frozenset()  # their symlink targets, when they are links
    globs: tuple[str, ...] = ()  # absolute include patterns
    dirs: frozenset[str] = frozenset()  # existing directories to watch
    recursive: bool = False  # a `**` glob needs its subtree watched

    def matters(self, path: str) -> bool:
        """Whether an event on `path` (in a watched directory) may change the config."""
        if path in self.files or path in self.links:
            return True
        if os.path.basename(path).startswith(".."):
            return True  # Kubernetes ConfigMap: `..data` and `..<timestamp>` are swapped
        for pattern in self.globs:
            if fnmatch.fnmatchcase(path, pattern):
                return True
            root = _glob_root(pattern)  # the glob's folder (or one above it) was just created
            if root == path or root.startswith(path + os.sep):
                return True
        return False

    def members(self) -> list[str]:
        """The files whose content makes up the config now: known ones and current glob hits."""
        found = set(self.files)
        for pattern in self.globs:
            found.update(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        return sorted(found)


def watch_set(root: str, files: Iterable[str], keep: WatchSet | None = None) -> WatchSet:
    """The WatchSet of a config whose root is `root` and whose loader read `files` (blocking).

    A file that cannot be parsed names no includes, so while one is broken (half-written, a
    typo) the files and globs of `keep`, the set watched so far, stay watched as well: fixing
    it, or a new match of a glob it named, must still be seen."""
    known = {os.path.abspath(root), *(os.path.abspath(f) for f in files)}
    named, globs, parsed = _included(sorted(known))
    known.update(named)
    if not parsed and keep is not None:
        known.update(keep.files)
        globs += [pattern for pattern in keep.globs if pattern not in globs]
    links = {os.path.realpath(f) for f in known} - known
    dirs = {os.path.dirname(f) for f in (*known, *links)}
    dirs.update(_glob_root(pattern) for pattern in globs)
    return WatchSet(
        files=frozenset(known),
        links=frozenset(links),
        globs=tuple(globs),
        dirs=frozenset(_existing(d) for d in dirs),
        recursive=any("**" in pattern for pattern in globs),
    )


def fingerprint(watch: WatchSet) -> str:
    """SHA-256 over the names and bytes of the watched files (blocking; a few small reads)."""
    digest = hashlib.sha256()
    for path in watch.members():
        digest.update(path.encode() + b"\x00")
        try:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        except OSError:
            digest.update(_MISSING)
    return digest.hexdigest()


def _included(paths: Iterable[str]) -> tuple[set[str], list[str], bool]:
    """What the `include` lists of `paths` name: plain files (watched even while they do not
    exist), absolute glob patterns, and whether every one of the files could be parsed."""
    named: set[str] = set()
    globs: list[str] = []
    parsed = True
    for path in paths:
        patterns = _includes(path)
        if patterns is None:
            parsed = False
            continue
        for pattern in patterns:
            absolute = os.path.join(os.path.dirname(path), os.path.expanduser(pattern))
            if _GLOB_CHARS.intersection(pattern):
                globs.append(os.path.normpath(absolute))
            else:
                named.add(os.path.normpath(absolute))
    return named, globs, parsed


def _includes(path: str) -> list[str] | None:
    """The `include` entries of one file, read by the loader's own parser so the watcher follows
    exactly the includes `load()` will; None when the file cannot be read or parsed (`load()`
    reports that, with its position)."""
    try:
        return read_includes(path)
    except Exception:  # never let a bad file stop the watcher
        return None


def _glob_root(pattern: str) -> str:
    """The directory part of `pattern` before its first wildcard."""
    parts = pattern.split(os.sep)
    for index, part in enumerate(parts):
        if _GLOB_CHARS.intersection(part):
            return os.sep.join(parts[:index]) or os.sep
    return os.path.dirname(pattern)


def _existing(directory: str) -> str:
    """`directory`, or its nearest existing ancestor (a glob's folder may be created later)."""
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    return directory


# ---- one reload attempt, off the loop ----------------------------------------------------------


@dataclass(slots=True)
class _Attempt:
    """What a worker thread found; `loaded` is None when nothing changed (no-op)."""

    watch: WatchSet
    fingerprint: str
    loaded: Loaded | None = None
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)


def _attempt(
    root: str, env: Mapping[str, str] | None, watch: WatchSet, previous: str | None, force: bool
) -> _Attempt:
    """Fingerprint, then (if changed or forced) load. The fingerprint is taken BEFORE loading,
    so a write that lands during the load changes it again and is not missed."""
    before = fingerprint(watch)
    if before == previous and not force:
        # Same content; but a folder an include glob names may have appeared: watch it too.
        return _Attempt(watch_set(root, watch.files, watch), before)
    try:
        loaded = load(root, env)
    except ConfigUnreadable as exc:
        return _Attempt(watch, before, errors=list(exc.diagnostics))
    found = watch_set(root, loaded.files, watch)
    if found != watch:  # new or dropped includes: fingerprint what will be watched from now on
        before = fingerprint(found)
    attempt = _Attempt(found, before, loaded, loaded.errors, loaded.warnings)
    if loaded.ok and loaded.graph is None:
        attempt.errors = [_failure(root, "the config did not compile")]
    return attempt


def _failure(root: str, message: str) -> Diagnostic:
    return Diagnostic("error", Location(root), "", message, code="reload")


# ---- the reloader ------------------------------------------------------------------------------


# Settings the process takes once, at start-up: the socket it listens on, the CORS layer around
# the app, and its state backend and database connections. A reload applies everything else.
RESTART_ONLY = (
    ("server", "host"),
    ("server", "port"),
    ("server", "cors_origins"),
    ("storage", "state"),
    ("storage", "state_failure"),
    ("storage", "database"),
)


# `concord serve --workers N` binds the socket once, in the supervisor, from the config it read
# then: `host:port` of that config, for workers that may start (or be replaced) after an edit.
LISTEN_ENV = "CONCORD_LISTEN"


def restart_only_changes(
    running: Graph, loaded: Graph, listen: tuple[str, int] | None = None
) -> tuple[str, ...]:
    """A warning per start-up-only setting `loaded` sets differently from `running`, the graph
    the process started with (named, never shown: a URL may hold a password), so a reload does
    not look as if it had applied them. `listen`: the configured host and port the socket was
    bound for, when another process bound it (`LISTEN_ENV`)."""
    bound = {("server", "host"): listen[0], ("server", "port"): listen[1]} if listen else {}
    return tuple(
        f"{section}.{name}: changed, but applied only when the server restarts"
        for section, name in RESTART_ONLY
        if bound.get((section, name), getattr(getattr(running, section), name))
        != getattr(getattr(loaded, section), name)
    )


def listen_from(env: Mapping[str, str]) -> tuple[str, int] | None:
    """`LISTEN_ENV`'s host and port, or None when this process bound its own socket."""
    host, _, port = env.get(LISTEN_ENV, "").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


class Reloader:
    """A `Component` (gateway/app.py): the watcher and SIGHUP handler of one worker process.

    Every worker runs its own; they converge because each loads the same files. `reload()` is
    also what `POST /_admin/config/reload` calls.
    """

    def __init__(
        self,
        config_path: str,
        env: Mapping[str, str] | None = None,
        *,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
        startup_warnings: tuple[str, ...] = (),
    ) -> None:
        self.config_path = os.path.abspath(config_path)
        self.env = env
        self.startup_warnings = startup_warnings  # what loading the config served first found
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.counts: dict[Result, int] = {"ok": 0, "error": 0}
        self.loaded_at = time.time()
        self.last: ReloadOutcome | None = None
        self._state: GatewayState | None = None
        self._started: Graph | None = None  # what the socket, CORS and storage were built from
        self._listen: tuple[str, int] | None = None  # the socket's, when a supervisor bound it
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._watch = WatchSet()
        self._fingerprint: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._restart = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._signal = False

    # -- Component ----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return []  # the admin API mounts its own (concord/admin/config.py)

    async def start(self, state: GatewayState) -> None:
        self._state = state
        self._started = state.graph
        self._listen = listen_from(os.environ)
        self.loaded_at = time.time()
        graph = state.graph
        warnings = self.startup_warnings + restart_only_changes(graph, graph, self._listen)
        self.last = ReloadOutcome("ok", "startup", self.loaded_at, graph.version, warnings=warnings)
        log.info("config loaded: version %s from %s", graph.version, self.config_path)
        for warning in warnings:
            log.warning("config: %s", warning)
        self._watch = await asyncio.to_thread(watch_set, self.config_path, state.graph.files)
        self._watcher = asyncio.create_task(self._watch_loop(), name="concord-reload-watch")
        for _ in range(3):  # let awatch register its inotify watches before the catch-up check
            await asyncio.sleep(0)
        await self.reload("startup", force=False)  # a write since the graph was first loaded
        self._install_sighup()

    async def stop(self, state: GatewayState) -> None:
        self._restart.set()  # ends the watch thread promptly
        if self._signal:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._signal = False
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watcher = None

    # -- public API ---------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(outcome)` after every reload attempt that did something."""
        self._listeners.append(listener)

    @property
    def graph(self) -> Graph | None:
        return self._state.graph if self._state is not None else None

    @property
    def files(self) -> list[str]:
        """The files the serving graph was loaded from."""
        graph = self.graph
        return sorted(graph.files) if graph is not None else []

    def status(self) -> dict[str, Any]:
        """SPEC §5 `GET /_admin/config`: `{version, loaded_at, files, last_reload}`."""
        graph = self.graph
        last = self.last
        return {
            "version": graph.version if graph is not None else None,
            "loaded_at": iso(self.loaded_at),
            "files": self.files,
            "last_reload": last.as_dict() if last is not None else None,
            "reloads": dict(self.counts),
        }

    async def reload(self, trigger: Trigger = "admin", *, force: bool = True) -> ReloadOutcome:
        """Load the config again and swap it in if it is valid; never raises for a bad file.

        `force=False` (file events) first compares a fingerprint of the files and returns the
        previous outcome untouched when nothing changed.
        """
        state = self._state
        if state is None:
            raise RuntimeError("the reloader is not started")
        async with self._lock:  # one reload at a time; a burst queues behind it
            started = time.monotonic()
            try:
                attempt = await asyncio.to_thread(
                    _attempt, self.config_path, self.env, self._watch, self._fingerprint, force
                )
            except Exception as exc:  # a loader bug must not stop the watcher or serve a 500
                log.exception("config reload failed unexpectedly")
                message = f"internal error while loading: {type(exc).__name__}"
                attempt = _Attempt(self._watch, "", errors=[_failure(self.config_path, message)])
            self._fingerprint = attempt.fingerprint
            if attempt.watch != self._watch:
                self._watch = attempt.watch
                self._restart.set()  # the watcher picks up new directories / globs
            loaded = attempt.loaded
            if loaded is None and not attempt.errors:
                assert self.last is not None
                return self.last  # nothing changed on disk
            outcome = self._apply(state, trigger, attempt, time.monotonic() - started)
        if outcome is not None:
            self._publish(outcome)
        return outcome or self.last  # type: ignore[return-value]

    # -- internals ----------------------------------------------------------------------------

    def _apply(
        self, state: GatewayState, trigger: Trigger, attempt: _Attempt, took: float
    ) -> ReloadOutcome | None:
        """Swap in a valid graph or keep the old one; None for a startup check that found
        nothing new (not a reload anyone asked for)."""
        now = time.time()
        current = state.graph
        warnings = tuple(d.render() for d in attempt.warnings)
        loaded = attempt.loaded
        if attempt.errors or loaded is None or loaded.graph is None:
            errors = tuple(d.render() for d in attempt.errors)
            return ReloadOutcome(
                "error", trigger, now, current.version, False, errors, warnings, took * 1000
            )
        graph = loaded.graph
        changed = graph.version != current.version
        if changed:
            state.set_graph(graph)  # SPEC §4: one reference; in-flight requests keep theirs
        elif trigger == "startup":
            return None
        started = self._started if self._started is not None else current
        warnings += restart_only_changes(started, graph, self._listen)  # until a restart
        self.loaded_at = now
        return ReloadOutcome("ok", trigger, now, graph.version, changed, (), warnings, took * 1000)

    def _publish(self, outcome: ReloadOutcome) -> None:
        self.last = outcome
        self.counts[outcome.result] += 1
        if outcome.ok:
            log.info(
                "config reloaded (%s): version %s%s in %.0f ms",
                outcome.trigger,
                outcome.version,
                "" if outcome.changed else " (unchanged)",
                outcome.duration_ms,
            )
            for warning in outcome.warnings:
                log.warning("config: %s", warning)
        else:
            log.error(
                "config reload (%s) rejected, still serving version %s:\n  %s",
                outcome.trigger,
                outcome.version,
                "\n  ".join(outcome.errors),
            )
        for listener in list(self._listeners):
            try:
                listener(outcome)
            except Exception:
                log.exception("reload listener %r failed", listener)

    async def _watch_loop(self) -> None:
        """Watch until cancelled; start over whenever the set of watched paths changes."""
        first = True
        while True:
            watch = self._watch
            self._restart = asyncio.Event()
            if not first:  # a file may have landed while no watch covered its folder
                self._spawn(self._catch_up())
            first = False
            try:
                await self._watch_once(watch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a vanished directory, inotify limits: retry shortly
                log.exception("config watcher failed; retrying")
                await asyncio.sleep(1.0)

    async def _watch_once(self, watch: WatchSet) -> None:
        def wanted(change: Change, path: str) -> bool:
            return watch.matters(path)

        events = awatch(
            *sorted(watch.dirs),
            watch_filter=wanted,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self._restart,
            recursive=watch.recursive,
        )
        async with contextlib.aclosing(events):
            async for changes in events:
                log.debug("config files changed: %s", sorted(p for _, p in changes))
                await self.reload("watch", force=False)
                if self._watch != watch:
                    return

    def _install_sighup(self) -> None:
        """Reload on SIGHUP beside uvicorn's own handlers (it uses SIGINT and SIGTERM only).

        Under `--workers N` the supervisor (commands/supervisor.py) passes SIGHUP on to every
        worker, which lands here.
        """
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._signal = True
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            log.debug("SIGHUP reload not available in this thread")

    def _on_sighup(self) -> None:
        self._spawn(self.reload("signal"))

    async def _catch_up(self) -> None:
        await asyncio.sleep(self.step_ms / 1000)  # once the new watches are registered
        await self.reload("watch", force=False)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
