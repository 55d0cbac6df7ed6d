"""API-key rotation with cooldowns (SPEC §2.2).

Requests use the first healthy key; a key answered with 401/403/429 cools down for the upstream's
Retry-After or the provider's `key_cooldown`, and the next healthy key is tried. Keys never leave
this object: status reports name them `key#1`, `key#2`... by position.

Cooldowns are measured on `time.monotonic`, the clock the event loop sleeps on (a wall-clock step
would otherwise lengthen or cut them short); `status()` reports their ends as epoch seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

COOLING_STATUSES = frozenset({401, 403, 429})


class KeyRing:
    """The keys of one provider and when each may be used again."""

    def __init__(
        self,
        keys: Iterable[str],
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = [key for key in keys if key]
        self._cooldown = cooldown
        self._clock = clock
        self._until: dict[int, float] = {}
        # The latest cooldown end of any key: past it, every key is healthy and the first key
        # answers without a scan (the hot path, twice per request).
        self._cooling_until = 0.0

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    @property
    def available(self) -> bool:
        return self.first_healthy() is not None

    def first_healthy(self, exclude: Iterable[str] = ()) -> str | None:
        """The first key not cooling down and not in `exclude` (keys tried in this call)."""
        keys = self._keys
        if (
            not exclude
            and keys
            and (not self._cooling_until or self._cooling_until <= self._clock())
        ):
            return keys[0]
        now = self._clock()
        excluded = set(exclude)
        for position, key in enumerate(self._keys):
            if key in excluded:
                continue
            if self._until.get(position, 0.0) <= now:
                return key
        return None

    def cool_down(self, key: str, seconds: float | None = None) -> None:
        """Bench `key` for `seconds` (default: the provider's key_cooldown)."""
        duration = self._cooldown if seconds is None else seconds
        until = self._clock() + max(duration, 0.0)
        for position, candidate in enumerate(self._keys):
            if candidate == key:
                self._until[position] = max(self._until.get(position, 0.0), until)
        self._cooling_until = max(self._cooling_until, until)

    def soonest(self) -> tuple[str, float]:
        """The key usable first and the seconds until it is (0 when now); needs a key."""
        until = self._until
        position = min(range(len(self._keys)), key=lambda p: until.get(p, 0.0))
        return self._keys[position], max(until.get(position, 0.0) - self._clock(), 0.0)

    def status(self) -> list[dict[str, Any]]:
        """Per key: a masked label and `cooldown_until` (epoch seconds) or None."""
        now = self._clock()
        to_epoch = time.time() - now
        out = []
        for position in range(len(self._keys)):
            until = self._until.get(position, 0.0)
            out.append(
                {
                    "key": f"key#{position + 1}",
                    "cooldown_until": until + to_epoch if until > now else None,
                }
            )
        return out
