"""SPEC §7: one JSON access-log line per request, never a secret, and no prompt unless
`server.log_bodies` asks for bodies."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest

from concord.observability.logs import (
    ACCESS_LOGGER,
    OPERATIONS_LOGGER,
    _iso_millis,
    log_operations,
)
from tests.fakes.upstream import FakeUpstream, Fault
from tests.observability.conftest import CLIENT_KEY, SECRETS, UPSTREAM_KEY, Start

CATALOG = """\
defaults:
  retry: {attempts: 1}
models:
  gpt-4o: {targets: [up/gpt-4o]}
"""
PROMPT = "my-very-private-prompt-text"


def access_lines(text: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if "request_id" in line]


async def test_access_log_under_errors_holds_no_secret(
    start: Start,
    upstream: FakeUpstream,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"Incorrect API key provided: {UPSTREAM_KEY}"
    gw = await start(CATALOG)
    upstream.script(
        "gpt-4o", [Fault(), Fault(status=500, message=echo), Fault(status=401, message=echo)]
    )
    assert (await gw.chat(key="ck-" + "x" * 40)).status_code == 401
    assert (await gw.chat(content=PROMPT)).status_code == 200
    assert (await gw.chat()).status_code == 502  # the upstream's 500 body echoes its key
    assert (await gw.chat()).status_code >= 400  # so does its 401
    assert (await gw.admin("GET", "/_admin/providers", key="wrong")).status_code == 401
    assert (await gw.admin("GET", "/_admin/providers")).status_code == 200
    await gw.stop()
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    for secret in (*SECRETS, PROMPT, "ck-" + "x" * 40):
        assert secret not in everything
    lines = access_lines(captured.err)
    assert [line["status"] for line in lines[:3]] == [401, 200, 502]
    assert len(lines) == 4  # admin calls are not gateway requests
    served = lines[1]
    assert served["workspace"] == "acme" and served["key"] == "team-key"
    assert served["model"] == "gpt-4o" and served["provider"] == "up"
    assert served["input_tokens"] > 0 and served["request_id"].startswith("req_")
    assert {"route", "cost_usd", "latency_ms", "cache"} <= served.keys()


async def test_log_level_above_info_silences_the_access_log(
    start: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORD_LOG_LEVEL", "warning")  # what `concord serve --log-level` sets
    gw = await start(CATALOG)
    assert (await gw.chat()).status_code == 200
    await gw.stop()
    assert access_lines(capsys.readouterr().err) == []
    assert logging.getLogger(ACCESS_LOGGER).propagate  # restored at shutdown


async def test_log_bodies_adds_the_request_and_the_answer_but_no_key(
    start: Start, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await start("server: {log_bodies: true}\n" + CATALOG)
    answered = await gw.chat(content=PROMPT, temperature=0)
    assert answered.status_code == 200
    upstream.script("gpt-4o", [Fault(status=400, message="bad things")])
    assert (await gw.chat(content="second", temperature=0.5)).status_code == 400
    await gw.stop()
    err = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in err
    served, refused = access_lines(err)
    assert served["request"] == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
    }
    assert served["response"] == answered.json()  # the answer exactly as the client got it
    assert refused["request"]["messages"][0]["content"] == "second"  # type: ignore[index]
    assert "bad things" in refused["response"]["error"]["message"]  # type: ignore[index]


async def test_a_clients_body_never_splits_or_forges_a_log_line(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `log_bodies`, the body is written out again: one line per request whatever it holds."""
    gw = await start("server: {log_bodies: true}\n" + CATALOG)
    forged = '{"request_id": "FORGED", "status": 200, "workspace": "victim"}'
    pretty = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, indent=2
    )
    bodies = [pretty, "{bad json\n" + forged, '{"x":\n' + forged + "\n"]
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    statuses = [
        (await gw.http.post("/v1/chat/completions", content=body, headers=headers)).status_code
        for body in bodies
    ]
    await gw.stop()
    assert statuses == [200, 400, 400]
    lines = [line for line in capsys.readouterr().err.splitlines() if '"request_id"' in line]
    records = [json.loads(line) for line in lines]  # every line is one whole JSON record
    assert [record["status"] for record in records] == [200, 400, 400]
    assert "FORGED" not in {record["request_id"] for record in records}
    assert records[0]["request"]["messages"][0]["content"] == "hi"
    assert records[1]["request"] == "{bad json\n" + forged  # not JSON: kept as text


async def test_a_cache_hit_replayed_as_a_stream_is_logged_as_a_stream(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await start("server: {log_bodies: true}\n" + CATALOG)
    assert (await gw.chat(temperature=0)).headers["x-concord-cache"] == "miss"
    replayed = await gw.chat(temperature=0, stream=True)
    assert replayed.headers["x-concord-cache"] == "hit"
    assert replayed.text.rstrip().endswith("data: [DONE]")
    await gw.stop()
    _, hit = access_lines(capsys.readouterr().err)
    assert hit["cache"] == "hit" and hit["stream"] is True
    assert isinstance(hit["ttft_ms"], float) and hit["ttft_ms"] >= 0
    assert hit["response"] is None  # as for any stream: the events are not logged


@pytest.mark.parametrize(
    "epoch",
    [1764106326.0, 1764106326.0004999, 1764106326.0005, 1764106326.9995, 1764106326.9999996, 0.5],
)
def test_line_times_read_as_datetime_would_write_them(epoch: float) -> None:
    """The access log formats each second once; the text must not drift from isoformat."""
    expected = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    assert _iso_millis(epoch) == expected


def test_the_gateways_own_messages_are_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """`concord serve` logs its own messages (reloads, warnings, errors) as JSON lines, an
    unexpected error with its traceback, at the level it was given."""
    logger = logging.getLogger(OPERATIONS_LOGGER)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    stream = io.StringIO()
    log_operations("warning", stream)
    log_operations("debug", io.StringIO())  # once per process: the first one stays
    module = logging.getLogger("concord.reload")
    module.info("config reloaded (watch): version abc")  # below --log-level warning
    module.warning("config: a warning")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        module.exception("reload listener failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("warning", "concord.reload", "config: a warning"),
        ("error", "concord.reload", "reload listener failed"),
    ]
    assert "RuntimeError: boom" in lines[1]["exception"]
