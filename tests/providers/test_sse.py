"""The SSE parser survives any chunking of the byte stream (SPEC §3 streaming)."""

from __future__ import annotations

import pytest

from concord.providers.base import SSEEvent
from concord.providers.sse import SSEParser, encode_event

WIRE = (
    ": keep-alive\r\n"
    "\r\n"
    "event: message_start\r\n"
    'data: {"type": "message_start"}\r\n'
    "\r\n"
    "data: line one\n"
    "data: line two\n"
    "\n"
    "event: content_block_delta\r"
    'data: {"text": "héllo ✓"}\r'
    "\r"
    "data:no-space\n"
    "id: 7\n"
    "\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEEvent(data='{"type": "message_start"}', event="message_start"),
    SSEEvent(data="line one\nline two"),
    SSEEvent(data='{"text": "héllo ✓"}', event="content_block_delta"),
    SSEEvent(data="no-space"),
    SSEEvent(data="[DONE]"),
]


def parse(chunks):
    parser = SSEParser()
    events = []
    for piece in chunks:
        events += parser.feed(piece)
    return events + parser.finish()


def test_whole_buffer():
    assert parse([WIRE]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_every_chunk_size(size):
    assert parse([WIRE[i : i + size] for i in range(0, len(WIRE), size)]) == EXPECTED


def test_every_single_split_point():
    for cut in range(len(WIRE) + 1):
        assert parse([WIRE[:cut], WIRE[cut:]]) == EXPECTED, cut


def test_crlf_split_between_cr_and_lf_is_one_line_end():
    assert parse([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [
        SSEEvent(data="a"),
        SSEEvent(data="b"),
    ]


def test_last_event_without_blank_line_is_kept_at_end_of_stream():
    assert parse([b"data: tail"]) == [SSEEvent(data="tail")]


def test_encode_then_parse_round_trips():
    events = [SSEEvent(data='{"a": 1}', event="ping"), SSEEvent(data="x\ny"), SSEEvent(data="")]
    wire = b"".join(encode_event(e) for e in events)
    assert wire.startswith(b'event: ping\ndata: {"a": 1}\n\n')
    assert parse([wire]) == events
