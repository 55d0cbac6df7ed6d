"""The batched command stream under `RedisState` (`pipe.Pipe`): its guarantees, held on one
redis-py connection driven directly, against throwaway servers (TCP, unix socket, TLS)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from concord.state import Bucket, BudgetLine, Settlement, Ticket
from concord.state.pipe import ConnectionGone, Pipe, ReplyError
from concord.state.redis import _SCRIPTS, RedisState

from .services import RedisProcess, free_port

T0 = 1_800_000_000.0
RPM = Bucket("k:rpm", 100, 1)
LINE = BudgetLine("b:acme", "2027-01", 10.0)


def test_commands_are_encoded_as_redis_py_encodes_them() -> None:
    pipe = Pipe.from_url("redis://127.0.0.1:1/0")  # never connects: packing needs no server
    args = ("SET", "clé", 42, -1, 1.5, b"\x00\xff", "")
    expected = b"".join(pipe._connection.pack_command(*args))
    assert pipe.pack(args) == expected
    assert expected.startswith(b"*7\r\n$3\r\nSET\r\n$4\r\ncl\xc3\xa9\r\n$2\r\n42\r\n")


@pytest.mark.services
async def test_replies_come_back_in_order_and_an_error_fails_only_its_command(
    redis_process: RedisProcess,
) -> None:
    pipe = Pipe.from_url(redis_process.url, timeout=1.0)
    try:
        replies = await asyncio.gather(
            pipe.call("SET", "a", "1"),
            pipe.call("GET"),  # wrong number of arguments
            pipe.call("GET", "a"),
            pipe.call("PING"),
            return_exceptions=True,
        )
        assert replies[0] == b"OK" and replies[2] == b"1" and replies[3] == b"PONG"
        assert isinstance(replies[1], ReplyError)
        assert str(replies[1]).startswith("ERR wrong number of arguments")
    finally:
        await pipe.close()


@pytest.mark.services
async def test_a_failing_reply_callback_does_not_stop_the_stream(
    redis_process: RedisProcess,
) -> None:
    pipe = Pipe.from_url(redis_process.url, timeout=1.0)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:

        def broken(reply: object) -> None:
            raise RuntimeError("callback bug")

        pipe.send(("PING",), broken)
        assert await pipe.call("ECHO", "still here") == b"still here"
        assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
    finally:
        loop.set_exception_handler(None)
        await pipe.close()


@pytest.mark.services
async def test_flushed_scripts_are_sent_whole_and_nothing_fails(
    redis_process: RedisProcess,
) -> None:
    state = RedisState.from_url(redis_process.url, key_prefix="t:", timeout=1.0)
    try:
        first = await state.admit(Ticket((RPM,), (LINE,), 0.5), T0)
        assert first.budget is not None
        redis.Redis(port=redis_process.port).script_flush()  # e.g. a failover to a new primary
        settled: list[object] = []
        settlement = Settlement(first.rate.reservation, 0, first.budget.reservation, 0.25)
        state.settle(settlement, settled.append)
        again = await state.admit(Ticket((RPM,), (LINE,), 0.5), T0)
        assert settled == [(pytest.approx(0.25),)]
        assert again.rate.allowed and again.budget is not None
        assert again.budget.spent == (pytest.approx(0.25),)
        assert state.failures == 0
    finally:
        await state.close()


@pytest.mark.services
async def test_after_a_restart_the_next_call_reconnects_and_reloads_the_scripts(
    redis_process: RedisProcess,
) -> None:
    state = RedisState.from_url(redis_process.url, key_prefix="t:", timeout=1.0)
    try:
        assert (await state.admit(Ticket((RPM,)), T0)).rate.allowed
        redis_process.stop()
        redis_process.start()
        await asyncio.sleep(0.05)  # idle meanwhile: the old connection is closed, nothing failed
        assert await state.ping()  # a clean new connection, with the scripts loaded first
        shas = [script.sha for script in _SCRIPTS.values()]
        assert redis.Redis(port=redis_process.port).script_exists(*shas) == [True] * len(shas)
        assert (await state.admit(Ticket((RPM,)), T0)).rate.allowed
        assert state.failures == 0
    finally:
        await state.close()


async def test_closing_fails_what_is_still_waiting() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # reads the command and never answers
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = Pipe.from_url(f"redis://127.0.0.1:{port}", timeout=5.0)
    seen: list[object] = []
    try:
        pipe.send(("PING",), seen.append)
        await asyncio.sleep(0.05)  # the batch is in flight
        pipe.timeout = 0.05
        started = time.monotonic()
        await pipe.close()
        assert time.monotonic() - started < 1.0
        assert len(seen) == 1 and isinstance(seen[0], ConnectionGone)
    finally:
        server.close()


# -- other transports: redis-py's connection classes, picked by the URL ----------------------


@contextmanager
def _server(args: Sequence[str], url: str, **client: object) -> Iterator[str]:
    """A throwaway redis-server with `args`, answering at `url`."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found")
    options = ["--save", "", "--appendonly", "no", *args]
    proc = subprocess.Popen(["redis-server", *options], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=0.2, **client).ping()
                break
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def _round_trip(url: str) -> None:
    state = RedisState.from_url(url, key_prefix="t:", timeout=1.0)
    try:
        admitted = await state.admit(Ticket((RPM,), (LINE,), 0.5, "entry"), T0)
        assert admitted.rate.allowed and admitted.budget is not None
        state.settle(Settlement(admitted.rate.reservation, 0, admitted.budget.reservation, 0.5))
        await state.flush()
        assert await state.budget_spent([(LINE.key, LINE.period_id)]) == [pytest.approx(0.5)]
        assert state.failures == 0
    finally:
        await state.close()


@pytest.mark.services
async def test_a_unix_socket_url(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    with _server(["--port", "0", "--unixsocket", str(sock)], f"unix://{sock}?db=2") as url:
        await _round_trip(url)


@pytest.mark.services
async def test_a_tls_url(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not found")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    openssl += ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(openssl, check=True, capture_output=True)
    port = free_port()
    args = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"
    try:
        with _server(args, url) as ready:
            await _round_trip(ready)
    except redis.ConnectionError as exc:  # a redis-server built without TLS
        pytest.skip(f"no TLS redis-server: {type(exc).__name__}")
