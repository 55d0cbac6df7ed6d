"""Usage rows as the writer inserts them: every text value fits its column (SPEC §1: a client's
over-long or NUL-holding text must not make its whole batch unwritable)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from concord.records.tables import usage
from concord.records.usage_rows import COLUMNS, as_row

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
