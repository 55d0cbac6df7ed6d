"""Usage rows as the writer inserts them: every text value fits its column (SPEC §1: a client's
over-long or NUL-holding text must not make its whole batch unwritable)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.gateway.record import UsageRecord as GatewayRecord
from concord.records.tables import usage
from concord.records.usage_rows import (
    COLUMNS,
    _builders,
    _complete_row,
    _gateway_row,
    _read_gateway,
    as_row,
)

TEXT_COLUMNS = {
    name: usage.c[name].type.length for name in COLUMNS if getattr(usage.c[name].type, "length", 0)
}
CLIENT_TEXT = ("request_id", "requested_model", "user", "key_name", "route")
texts = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from("ab\x00é"), min_size=60, max_size=1200),
)
optional = {name: st.one_of(st.none(), texts) for name in CLIENT_TEXT if name != "request_id"}


@given(st.fixed_dictionaries({"request_id": texts.filter(bool), **optional}))
def test_text_is_cut_to_its_column_and_loses_nul_only_when_it_must(values: dict) -> None:
    record = {"workspace": "acme", "status": 200, **values}
    row = dict(zip(COLUMNS, as_row(record), strict=True))
    for name in CLIENT_TEXT:
        given_value, written = values[name], row[name]
        if given_value is None:
            assert written is None
            continue
        limit = TEXT_COLUMNS[name]
        assert isinstance(written, str) and len(written) <= limit and "\x00" not in written
        if len(given_value) <= limit and "\x00" not in given_value:
            assert written == given_value  # text that fits is written as it is
        else:
            assert written == given_value.replace("\x00", "")[:limit]


def test_the_budgets_charged_are_kept_whole_however_many_and_long() -> None:
    """The names are the config's; one cut off would drop that budget from the rebuilt spend."""
    charged = "," + ",".join(f"team-{i:02d}-" + "x" * 40 for i in range(60)) + ","
    record = {"workspace": "acme", "status": 200, "request_id": "r", "budgets": charged}
    row = dict(zip(COLUMNS, as_row(record), strict=True))
    assert len(charged) > 2000 and row["budgets"] == charged


# -- the gateway record's fast path ----------------------------------------------------------

_gateway_text = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from("ab\x00"), min_size=30, max_size=260),
    st.integers(0, 3),  # not text at all: the general path writes it as text
)
_count = st.one_of(st.none(), st.integers(0, 10**6))


@st.composite
def gateway_records(draw: st.DrawFn) -> GatewayRecord:
    return GatewayRecord(
        request_id=draw(st.one_of(st.text(min_size=1, max_size=80), _gateway_text)),
        time=draw(
            st.one_of(
                st.floats(0, 4e9, allow_nan=False),
                st.integers(0, 4 * 10**9),
                st.sampled_from([1_700_000_000.9999996, 1_700_000_000.0000005, 0.5, -0.5]),
            )
        ),
        workspace=draw(st.one_of(st.sampled_from(["acme", "default"]), _gateway_text)),
        key=draw(_gateway_text),
        user=draw(_gateway_text),
        requested_model=draw(_gateway_text),
        model=draw(_gateway_text),
        provider=draw(_gateway_text),
        target=draw(_gateway_text),
        route=draw(_gateway_text),
        endpoint="/v1/chat/completions",
        status=draw(st.one_of(st.none(), st.sampled_from([200, 429, 502]))),
        input_tokens=draw(_count),
        output_tokens=draw(_count),
        cached_tokens=draw(_count),
        cost_usd=draw(st.one_of(st.none(), st.floats(0, 10, allow_nan=False))),
        latency_ms=draw(st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False))),
        ttft_ms=draw(st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False))),
        cache_hit=draw(st.one_of(st.none(), st.booleans())),
        attempts=draw(_count),
        error_type=draw(_gateway_text),
        key_id=draw(_gateway_text),
        budgets=draw(st.one_of(st.none(), st.just(",team,"), st.just(",a\x00b,"))),
    )


@settings(max_examples=400)
@given(gateway_records())
def test_a_gateway_record_makes_the_row_the_general_path_makes(record: GatewayRecord) -> None:
    """`as_row`'s fast path for the gateway's record (`_gateway_row`) must give the row its
    general path (`_complete_row`: defaults, required values, `ts`, text fitting) gives; only
    the id, fresh each time, differs."""
    try:
        general = _complete_row(_read_gateway(record))
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            as_row(record)
        return
    fast = as_row(record)
    assert fast[1:] == general[1:]
    assert [type(value) for value in fast[1:]] == [type(value) for value in general[1:]]
    assert len(fast[0]) == 32 and int(fast[0], 16) >= 0


def test_a_usual_gateway_record_takes_the_fast_path_with_a_time_ordered_unique_id() -> None:
    assert _builders[GatewayRecord] is _gateway_row
    records = [
        GatewayRecord(
            request_id=f"req-{i}",
            time=1_700_000_000.9999996,
            workspace="acme",
            key="ci",
            user=None,
            requested_model="gpt-4o",
            model="gpt-4o",
            provider="openai",
            target="t",
            route="chat",
            endpoint="/v1/chat/completions",
            status=200,
        )
        for i in range(200)
    ]
    rows = [as_row(record) for record in records]
    ids = [row[0] for row in rows]
    assert len(set(ids)) == len(ids) and [i[:16] for i in ids] == sorted(i[:16] for i in ids)
    assert rows[0][2] == datetime.fromtimestamp(1_700_000_000.9999996, UTC)
    assert rows[0][2] == datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)  # rounded up a second
