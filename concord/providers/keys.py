"""API-key rotation with cooldowns (SPEC §2.2).

Requests use the first healthy key; a key answered with 401/403/429 cools down for the upstream's
wait (Retry-After, retry-after-ms, else OpenAI/Azure's `x-ratelimit-reset-*`) or the provider's
`key_cooldown`, and the next healthy key is tried. Keys never leave this object: status reports
name them `key#1`, `key#2`... by position.

A 401 or 403 says the key itself is bad or revoked, so it cools down for every model. A 429 says
only that one upstream model (an Azure deployment) is out of capacity: OpenAI limits each model
and Azure each deployment separately, so the key stays usable for the provider's other models.
OpenAI's `insufficient_quota` 429 (billing) is about the account and cools the key everywhere.

Cooldowns are measured on `time.monotonic`, the clock the event loop sleeps on (a wall-clock step
would otherwise lengthen or cut them short); `status()` reports their ends as epoch seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

COOLING_STATUSES = frozenset({401, 403, 429})
_NONE: frozenset[str] = frozenset()

# Go-style durations as OpenAI and Azure write them: `7s`, `1m30s`, `250ms`, `6m0s`, `0.5s`.
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|us|µs|ns|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# the limit each reset header belongs to, and the header saying what is left of it
_RESETS = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
)


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (`1m30s`) or a bare number of seconds; None if neither."""
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    if not _DURATION.fullmatch(text):
        return None
    parts = _DURATION_PART.findall(text)
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in parts)


def rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """The wait OpenAI/Azure's `x-ratelimit-reset-*` headers give, for a 429 without Retry-After.

    The reset of a limit its `x-ratelimit-remaining-*` header shows spent (the longest, if both
    are); when neither says which limit was hit, the shorter reset: a second 429 after it only
    cools the key again, while the longer one could bench a key that is already fine."""
    spent: list[float] = []
    given: list[float] = []
    for reset_name, remaining_name in _RESETS:
        value = headers.get(reset_name)
        seconds = parse_duration(value) if value else None
        if seconds is None:
            continue
        given.append(seconds)
        if (headers.get(remaining_name) or "").strip() == "0":
            spent.append(seconds)
    if spent:
        return max(spent)
    return min(given) if given else None


def cools_every_model(status: int | None, body: Any) -> bool:
    """Whether an answer says the key itself is unusable, not one model's limit (module doc)."""
    if status != 429:
        return True
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    return "insufficient_quota" in (error.get("code"), error.get("type"))


class KeyRing:
    """The keys of one provider and when each may be used again, for every model or for one."""

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
        self._until: dict[int, float] = {}  # by position: benched for every model
        self._model_until: dict[str, dict[int, float]] = {}  # by upstream model, then position
        # The latest cooldown end of any key: past it, every key is healthy and the first key
        # answers without a scan (the hot path, twice per request).
        self._cooling_until = 0.0

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    @property
    def available(self) -> bool:
        """Some key is not benched for every model (it may still be cooling for some)."""
        return self.first_healthy() is not None

    def first_healthy(self, exclude: Iterable[str] = (), model: str | None = None) -> str | None:
        """The first key not cooling down (for every model, or for `model` when given) and not
        in `exclude` (keys tried in this call)."""
        keys = self._keys
        if (
            not exclude
            and keys
            and (not self._cooling_until or self._cooling_until <= self._clock())
        ):
            return keys[0]
        now = self._clock()
        excluded = set(exclude)
        for position, key in enumerate(keys):
            if key not in excluded and self._ready_at(position, model) <= now:
                return key
        return None

    def cool_down(self, key: str, seconds: float | None = None, model: str | None = None) -> None:
        """Bench `key` for `seconds` (default: the provider's key_cooldown), for `model` only
        when given, else for every model."""
        duration = self._cooldown if seconds is None else seconds
        now = self._clock()
        until = now + max(duration, 0.0)
        if model is None:
            benched = self._until
        else:
            self._forget_expired(now)
            benched = self._model_until.setdefault(model, {})
        for position, candidate in enumerate(self._keys):
            if candidate == key:
                benched[position] = max(benched.get(position, 0.0), until)
        self._cooling_until = max(self._cooling_until, until)

    def soonest(self, model: str | None = None) -> tuple[str, float]:
        """The key usable first (for `model`, when given) and the seconds until it is (0 when
        now); needs a key."""
        position = min(range(len(self._keys)), key=lambda p: self._ready_at(p, model))
        return self._keys[position], max(self._ready_at(position, model) - self._clock(), 0.0)

    def wait(self, model: str | None = None) -> float:
        """Seconds until some key serves `model` (any model when None); 0 when one does now."""
        return self.soonest(model)[1] if self._keys else 0.0

    def cooling_models(self) -> frozenset[str]:
        """Upstream models every key is cooling down for, though some key serves other models.

        Asked on every request while any key cools: one comparison when none does."""
        if not self._cooling_until:
            return _NONE
        now = self._clock()
        if self._cooling_until <= now or not self._model_until:
            return _NONE
        positions = range(len(self._keys))
        cooling = [
            model
            for model in self._model_until
            if all(self._ready_at(p, model) > now for p in positions)
        ]
        return frozenset(cooling) if cooling else _NONE

    def adopt(self, previous: KeyRing) -> None:
        """Take over `previous`'s cooldowns of the keys this ring still lists (by value): a
        reload that edits `api_keys` must not hand a benched key straight back to traffic."""
        shift = self._clock() - previous._clock()  # the rings may run on different clocks
        then = previous._clock()
        where: dict[str, list[int]] = {}
        for position, key in enumerate(self._keys):
            where.setdefault(key, []).append(position)
        for old, key in enumerate(previous._keys):
            for new in where.get(key, ()):
                self._carry(previous._until.get(old, 0.0), then, shift, self._until, new)
                for model, benched in previous._model_until.items():
                    mine = self._model_until.setdefault(model, {})
                    self._carry(benched.get(old, 0.0), then, shift, mine, new)
        self._model_until = {model: b for model, b in self._model_until.items() if b}

    def status(self) -> list[dict[str, Any]]:
        """Per key: a masked label, `cooldown_until` (epoch seconds) or None for a key benched
        for every model, and `models` ({upstream model: epoch seconds}) while it cools for some."""
        now = self._clock()
        to_epoch = time.time() - now
        out = []
        for position in range(len(self._keys)):
            until = self._until.get(position, 0.0)
            entry: dict[str, Any] = {
                "key": f"key#{position + 1}",
                "cooldown_until": until + to_epoch if until > now else None,
            }
            models = {
                model: benched[position] + to_epoch
                for model, benched in self._model_until.items()
                if benched.get(position, 0.0) > now
            }
            if models:
                entry["models"] = models
            out.append(entry)
        return out

    def _ready_at(self, position: int, model: str | None) -> float:
        """When the key at `position` may serve `model` (any model when None) again."""
        until = self._until.get(position, 0.0)
        if model is None:
            return until
        benched = self._model_until.get(model)
        return max(until, benched.get(position, 0.0)) if benched else until

    def _forget_expired(self, now: float) -> None:
        """Drop per-model cooldowns that ended, so the map holds only models cooling now."""
        for model in [m for m, b in self._model_until.items() if max(b.values(), default=0) <= now]:
            del self._model_until[model]

    def _carry(
        self, until: float, then: float, shift: float, benched: dict[int, float], position: int
    ) -> None:
        if until > then:
            moved = until + shift
            benched[position] = max(benched.get(position, 0.0), moved)
            self._cooling_until = max(self._cooling_until, moved)


def key_ring(adapter: object) -> KeyRing | None:
    """The adapter's API keys, when it holds any (the mock and keyless servers hold none)."""
    ring = getattr(adapter, "keys", None)
    return ring if isinstance(ring, KeyRing) and len(ring) else None
