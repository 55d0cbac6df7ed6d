"""UTC timestamps as text, the date and time formatted once per second.

The access log and the SQLite usage rows each write thousands of timestamps a second, nearly all
within the same few seconds: a `datetime` formatted for every one costs a microsecond or so,
where a cached prefix and a table lookup for the fraction cost a fraction of that.
"""

from __future__ import annotations

from datetime import datetime, timedelta

_NAIVE_EPOCH = datetime(1970, 1, 1)
_prefixes: dict[str, dict[int, str]] = {" ": {}, "T": {}}


def second_text(second: int, sep: str) -> str:
    """`YYYY-MM-DD<sep>HH:MM:SS` (UTC) of `second` since the epoch; `sep` is " " or "T".
    Exact integer arithmetic, so any year `datetime` knows works."""
    cache = _prefixes[sep]
    text = cache.get(second)
    if text is None:
        if len(cache) > 64:
            cache.clear()
        text = cache[second] = (_NAIVE_EPOCH + timedelta(seconds=second)).isoformat(sep)
    return text
