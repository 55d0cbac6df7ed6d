"""SPEC §4 against a real `concord serve`: edits take effect at once, never drop a request, and a
broken file never replaces a working one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Fault
from tests.reload.conftest import (
    ADMIN_KEY,
    ClientLoop,
    StartServer,
    chat,
    eventually,
    free_port,
    gateway_yaml,
    reply_of,
    write_atomic,
)

pytestmark = pytest.mark.slow


def test_route_change_takes_effect_without_failed_requests(serve: StartServer) -> None:
    server = serve()
    with ClientLoop(server.url) as loop:
        loop.wait_reply("from A")
        for round_ in range(6):
            use, reply = ("beta", "from B") if round_ % 2 == 0 else ("alpha", "from A")
            write_atomic(server.config, gateway_yaml(server.port, "", use=use))
            assert loop.wait_reply(reply, timeout=2.0) < 1.0
        # an in-place write (truncate, then write) as `echo > concord.yaml` does
        server.config.write_text(gateway_yaml(server.port, "", use="beta"), encoding="utf-8")
        loop.wait_reply("from B", timeout=2.0)
    assert loop.failures == []
    assert loop.ok > 50
    response = httpx.post(server.url + "/v1/chat/completions", json=chat())
    assert response.headers["x-concord-model"] == "beta"
    assert response.headers["x-concord-config"] == server.status()["version"]


def test_invalid_edit_keeps_serving_and_is_reported(serve: StartServer) -> None:
    server = serve()
    before = server.status()
    with ClientLoop(server.url) as loop:
        loop.wait_reply("from A")
        write_atomic(server.config, gateway_yaml(server.port, "", use="gamma"))
        assert eventually(lambda: server.status()["last_reload"]["result"] == "error")  # type: ignore[index]
        time.sleep(0.2)
    assert loop.failures == []
    assert loop.last_reply == "from A"
    status = server.status()
    assert status["version"] == before["version"]
    assert status["loaded_at"] == before["loaded_at"]
    errors = status["last_reload"]["errors"]  # type: ignore[index]
    line = (
        gateway_yaml(server.port, "", use="gamma")
        .splitlines()
        .index("  - {name: main, use: gamma}")
    )
    assert errors == [f"{server.config}:{line + 1}:23: routes[0].use: unknown model 'gamma'"]
    assert httpx.get(server.url + "/healthz").headers["x-concord-config"] == before["version"]
    # POST /_admin/config/reload answers 422 with the same errors
    response = server.admin.post("/_admin/config/reload")
    assert response.status_code == 422
    assert response.json()["errors"] == errors
    # a file that is not YAML at all is refused the same way, with its position
    write_atomic(server.config, "version: 1\nproviders: [unclosed\n")
    response = server.admin.post("/_admin/config/reload")
    assert response.status_code == 422
    assert response.json()["errors"][0].startswith(f"{server.config}:")
    assert server.version() == before["version"]


def test_the_config_served_first_and_every_reload_are_logged_with_their_warnings(
    serve: StartServer, tmp_path: Path
) -> None:
    """A deploy that leaves a provider without its key says so as the server starts (in the
    log and in `GET /_admin/config`), not only at the next reload; each reload that goes live
    is logged too. The gateway's own messages are JSON lines, like the access log."""
    port = free_port()
    config = tmp_path / "concord.yaml"

    def keyless(use: str) -> str:
        text = gateway_yaml(port, "", use=use)
        keyless = '\n  o: {type: openai, api_keys: ["${NO_SUCH_KEY_IN_THIS_TEST:-}"]}'
        return text.replace('reply: "from B"}', 'reply: "from B"}' + keyless)

    config.write_text(keyless("alpha"), encoding="utf-8")
    server = serve(config=config, port=port, log_level="info")
    status = server.status()
    assert status["last_reload"]["trigger"] == "startup"  # type: ignore[index]
    warnings = status["last_reload"]["warnings"]  # type: ignore[index]
    assert any("provider 'o' has no API key" in warning for warning in warnings)

    def lines() -> list[dict[str, str]]:
        found = []
        for line in server.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("logger") == "concord.reload":
                    found.append(entry)
        return found

    assert eventually(lambda: any("config loaded" in entry["message"] for entry in lines()))
    warned = [entry for entry in lines() if entry["level"] == "warning"]
    assert any("provider 'o' has no API key" in entry["message"] for entry in warned)
    write_atomic(server.config, keyless("beta"))
    assert eventually(lambda: server.version() != status["version"])
    reloaded = f"config reloaded (watch): version {server.version()}"
    assert eventually(lambda: any(reloaded in entry["message"] for entry in lines()))


def test_admin_config_needs_the_admin_key(serve: StartServer) -> None:
    server = serve()
    assert httpx.get(server.url + "/_admin/config").status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert httpx.post(server.url + "/_admin/config/reload", headers=wrong).status_code == 401
    response = server.admin.get("/_admin/config")
    status = response.json()
    # SPEC §3: the config version is on every answer, admin, health and unknown paths included
    assert response.headers["x-concord-config"] == status["version"]
    for path in ("/healthz", "/readyz", "/no-such-path"):
        assert httpx.get(server.url + path).headers["x-concord-config"] == status["version"]
    assert status["files"] == [str(server.config)]
    assert status["last_reload"]["result"] == "ok"  # type: ignore[index]
    assert ADMIN_KEY not in json.dumps(status)


def test_sighup_reloads(serve: StartServer) -> None:
    server = serve()
    before = server.status()
    server.signal(signal.SIGHUP)
    assert eventually(lambda: server.status()["loaded_at"] != before["loaded_at"])
    status = server.status()
    assert status["last_reload"]["trigger"] == "signal"  # type: ignore[index]
    assert server.process.poll() is None  # SIGHUP did not kill the server
    # the signal re-reads the file: an edit is served after SIGHUP even if no event was seen
    write_atomic(server.config, gateway_yaml(server.port, "", use="beta"))
    server.signal(signal.SIGHUP)
    assert eventually(
        lambda: reply_of(httpx.post(server.url + "/v1/chat/completions", json=chat())) == "from B"
    )


def test_configmap_symlink_swap_is_picked_up(serve: StartServer, tmp_path: Path) -> None:
    """Kubernetes: concord.yaml -> ..data/concord.yaml, ..data -> ..<timestamp>/ swapped at once."""
    volume = tmp_path / "config"
    volume.mkdir()
    port = free_port()
    (volume / "..2026_a").mkdir()
    (volume / "..2026_a" / "concord.yaml").write_text(gateway_yaml(port, ""), encoding="utf-8")
    os.symlink("..2026_a", volume / "..data")
    os.symlink("..data/concord.yaml", volume / "concord.yaml")
    server = serve(config=volume / "concord.yaml", port=port)
    with ClientLoop(server.url) as loop:
        loop.wait_reply("from A")
        (volume / "..2026_b").mkdir()
        (volume / "..2026_b" / "concord.yaml").write_text(
            gateway_yaml(port, "", use="beta"), encoding="utf-8"
        )
        os.symlink("..2026_b", volume / "..data_tmp")
        os.replace(volume / "..data_tmp", volume / "..data")
        (volume / "..2026_a" / "concord.yaml").unlink()
        (volume / "..2026_a").rmdir()
        assert loop.wait_reply("from B", timeout=2.0) < 1.0
    assert loop.failures == []


def test_included_files_and_new_glob_matches_are_picked_up(
    serve: StartServer, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    route = "routes:\n  - {name: policy, when: {model: alpha}, use: %s}\n"
    (policies / "10-route.yaml").write_text(route % "alpha", encoding="utf-8")
    port = free_port()
    config = tmp_path / "concord.yaml"
    root = gateway_yaml(port, "include: [policies/*.yaml, extra/*.yaml]\n")
    config.write_text(root.replace("routes:\n  - {name: main, use: alpha}\n", ""), "utf-8")
    server = serve(config=config, port=port)
    with ClientLoop(server.url) as loop:
        loop.wait_reply("from A")
        write_atomic(policies / "10-route.yaml", route % "beta")
        assert loop.wait_reply("from B", timeout=2.0) < 1.0
    assert loop.failures == []
    # a new file matching a glob (in a folder that did not exist at start-up) adds a model
    gamma = "providers: {c: {type: mock, reply: from C}}\nmodels: {gamma: {targets: [c/m]}}\n"
    assert httpx.post(server.url + "/v1/chat/completions", json=chat("gamma")).status_code == 404
    (tmp_path / "extra").mkdir()
    write_atomic(tmp_path / "extra" / "gamma.yaml", gamma)
    assert eventually(
        lambda: (
            httpx.post(server.url + "/v1/chat/completions", json=chat("gamma")).status_code == 200
        )
    )
    assert str(tmp_path / "extra" / "gamma.yaml") in server.status()["files"]  # type: ignore[operator]
    # and a new file in a folder already watched
    write_atomic(
        policies / "20-delta.yaml",
        gamma.replace("gamma", "delta").replace("c:", "d:").replace("c/m", "d/m"),
    )
    assert eventually(
        lambda: (
            httpx.post(server.url + "/v1/chat/completions", json=chat("delta")).status_code == 200
        )
    )


def slow_model_yaml(port: int, upstream: FakeUpstream, *, route: bool = False) -> str:
    """`gateway_yaml` plus a model `slow` on the fake upstream's `slow-up` (scripted by the test),
    and with `route`, a route `streaming` for it."""
    extra = f"  up: {{type: openai, base_url: {upstream.openai_url}, api_keys: [k]}}\n"
    text = (
        gateway_yaml(port, "")
        .replace("providers:\n", "providers:\n" + extra)
        .replace("models:\n", "models:\n  slow: {targets: [up/slow-up]}\n")
    )
    if route:
        streaming = "  - {name: streaming, when: {model: slow}, use: slow}\n"
        text = text.replace("routes:\n", "routes:\n" + streaming)
    return text


def stream_in_background(url: str) -> tuple[threading.Thread, list[str]]:
    """A streamed chat of `slow` read line by line in a thread (its `x-concord-route` first);
    returns once the first line arrived."""
    first_line = threading.Event()
    received: list[str] = []

    def stream() -> None:
        body = chat("slow", stream=True)
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=20) as answer:
            received.append(answer.headers["x-concord-route"])
            for line in answer.iter_lines():
                received.append(line)
                first_line.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_line.wait(5)
    return reader, received


def test_in_flight_stream_survives_a_reload_that_removes_its_route(
    serve: StartServer, tmp_path: Path
) -> None:
    upstream = FakeUpstream.start_in_thread()
    try:
        words = " ".join(f"w{i}" for i in range(15))
        upstream.script("slow-up", [Fault(reply=words, chunk_delay=0.08)])
        port = free_port()
        config = tmp_path / "concord.yaml"
        config.write_text(slow_model_yaml(port, upstream, route=True), encoding="utf-8")
        server = serve(config=config, port=port)
        reader, received = stream_in_background(server.url)
        before = server.version()
        write_atomic(config, gateway_yaml(port, ""))  # no `up`, no `slow`, no `streaming`
        assert eventually(lambda: server.version() != before, timeout=2.0)
        reader.join(10)
        assert received[0] == "streaming"
        deltas = [json.loads(line[6:]) for line in received[1:] if line.startswith("data: {")]
        text_out = "".join(
            d["choices"][0]["delta"].get("content") or "" for d in deltas if d["choices"]
        )
        assert text_out == words
        assert received[-2:] == ["data: [DONE]", ""] or received[-1] == "data: [DONE]"
        after = httpx.post(server.url + "/v1/chat/completions", json=chat("slow"))
        assert after.headers["x-concord-route"] == "main"  # the new graph: no `streaming`
        assert reply_of(after) == "from A"
    finally:
        upstream.stop()


def test_two_workers_converge(serve: StartServer) -> None:
    server = serve(workers=2)
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: any worker may answer
    with httpx.Client(base_url=server.url, limits=fresh, timeout=5) as client:
        assert all(client.get("/readyz").status_code == 200 for _ in range(20))
        write_atomic(server.config, gateway_yaml(server.port, "", use="beta"))
        time.sleep(1.0)
        replies = [reply_of(client.post("/v1/chat/completions", json=chat())) for _ in range(40)]
        versions = {client.get("/healthz").headers["x-concord-config"] for _ in range(40)}
    assert set(replies) == {"from B"}
    assert len(versions) == 1


def _children(pid: int) -> set[int]:
    """The worker processes of the supervisor `pid` (Linux): the children it spawned, less
    multiprocessing's resource tracker."""
    workers = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(int(child))
    return workers


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from /proc")
def test_sighup_reloads_every_worker_in_place(serve: StartServer) -> None:
    """SPEC §4 under `--workers`: SIGHUP reaches every worker, and each reloads itself as a single
    process would. The same processes go on serving, so what they hold in memory (rate limits,
    cache, circuit breakers) survives: restarting them would not."""
    server = serve(workers=2)
    assert eventually(lambda: len(_children(server.process.pid)) == 2, timeout=45)
    workers = _children(server.process.pid)
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: any worker may answer
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, limits=fresh, headers=admin, timeout=5) as client:

        def reloads() -> set[tuple[str, str]]:
            """(last trigger, loaded_at) of the workers that answered 20 fresh connections."""
            statuses = [client.get("/_admin/config").json() for _ in range(20)]
            return {(s["last_reload"]["trigger"], s["loaded_at"]) for s in statuses}

        # both workers serving (two load times), neither reloaded since it started
        assert eventually(lambda: {t for t, _ in reloads()} == {"startup"}, timeout=10)
        assert eventually(lambda: len(reloads()) == 2, timeout=10)
        server.signal(signal.SIGHUP)
        assert eventually(lambda: {t for t, _ in reloads()} == {"signal"}, timeout=10)
    assert _children(server.process.pid) == workers
    assert server.process.poll() is None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from /proc")
def test_a_worker_replaced_while_the_file_is_invalid_waits_for_a_valid_one(
    serve: StartServer,
) -> None:
    """A worker that dies after a bad edit is replaced by one that waits for a valid file
    instead of exiting, being replaced, and exiting again; the other worker serves meanwhile."""
    server = serve(workers=2, log_level="info")
    supervisor = server.process.pid
    # both have read the file: one still starting would read the bad edit below as well
    assert eventually(lambda: server.workers_started() == 2, timeout=45)
    write_atomic(server.config, "version: 1\nproviders: [unclosed\n")
    victim = min(_children(supervisor))
    os.kill(victim, signal.SIGKILL)
    waiting = "this worker waits for a valid one"
    assert eventually(lambda: waiting in server.log.read_text(), timeout=30)
    workers = _children(supervisor)
    assert len(workers) == 2 and victim not in workers, server.log.read_text()
    time.sleep(3)  # a worker that exited on the bad file would have been replaced by now
    assert _children(supervisor) == workers
    assert server.workers_serving() == 1  # the other worker, on its last good config
    assert server.log.read_text().count(waiting) == 1

    write_atomic(server.config, gateway_yaml(server.port, "", use="beta"))  # fixed
    assert eventually(lambda: server.workers_started() == 3, timeout=45)  # the waiting one too
    assert _children(supervisor) == workers
    assert server.process.poll() is None


def test_with_workers_a_stopping_server_refuses_new_connections_while_streams_finish(
    serve: StartServer, tmp_path: Path
) -> None:
    """SIGTERM with `--workers 2`: a stream in flight finishes, and a new connection is refused
    at once instead of waiting, accepted by nobody, until the drain ends."""
    upstream = FakeUpstream.start_in_thread()
    try:
        words = " ".join(f"w{i}" for i in range(20))
        upstream.script("slow-up", [Fault(reply=words, chunk_delay=0.1)] * 4)
        port = free_port()
        config = tmp_path / "concord.yaml"
        config.write_text(slow_model_yaml(port, upstream), encoding="utf-8")
        server = serve(config=config, port=port, workers=2, log_level="info")
        # both serving: one still starting when SIGTERM comes would serve a moment after it
        assert eventually(lambda: server.workers_started() == 2, timeout=45)
        time.sleep(0.2)  # and listening: the socket is taken right after that line
        reader, received = stream_in_background(server.url)
        server.signal(signal.SIGTERM)
        # the workers have begun to drain: each has closed its copy of the listening socket
        assert eventually(lambda: server.log.read_text().count("Shutting down") == 2, timeout=10)
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz", timeout=5)
        assert time.monotonic() - started < 1.0  # refused, not left waiting
        reader.join(15)
        assert "data: [DONE]" in received  # the stream in flight finished
        assert server.process.wait(15) == 0
    finally:
        upstream.stop()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from /proc")
def test_a_dead_workers_gauges_go_with_it(
    serve: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §7 under `--workers`: a worker killed and replaced stops reporting its live gauges
    (an open circuit, the config version it served), or alerts on them would never clear."""
    metrics = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics))  # where the workers write

    def live_gauges(pid: int) -> list[str]:
        return [p.name for p in metrics.glob(f"gauge_live*_{pid}.db")]

    server = serve(workers=2)
    supervisor = server.process.pid
    assert eventually(lambda: len(_children(supervisor)) == 2, timeout=45)
    victim = min(_children(supervisor))
    assert eventually(lambda: bool(live_gauges(victim)), timeout=30)
    os.kill(victim, signal.SIGKILL)
    assert eventually(
        lambda: len(_children(supervisor)) == 2 and victim not in _children(supervisor),
        timeout=45,
    )
    assert eventually(lambda: not live_gauges(victim), timeout=10), live_gauges(victim)
    server.stop()
    assert metrics.is_dir()  # a directory the operator chose is theirs: it stays
