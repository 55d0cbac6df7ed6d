"""Redis state: limits and budgets exact across workers and replicas (SPEC §1, §2.6, §2.7).

Every multi-step update is one Lua script, run with EVALSHA (scripts are loaded on connect, and
sent whole after a NOSCRIPT reply), so concurrent gateways never interleave inside a
check-and-reserve. The scripts mirror `tokenbucket.py` and `MemoryState`; the shared test suite
holds both to the same behaviour. A request's whole admission (`_ADMIT`: rate buckets, budget
lines, cache read) is one script and one round trip; its settlement (`_SETTLE`) is another, sent
without waiting for the reply, on the same pipelined connection (`pipe.Pipe`), so it is applied
before anything this process sends later. Every client error becomes `StateUnavailable` (its
message names only the error type). Nothing is retried on its own: replaying a reservation
script after a timeout could count one request twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Sequence
from typing import Any

from concord.state.backend import (
    Admitted,
    Bucket,
    BudgetLine,
    BudgetReservation,
    BudgetVerdict,
    RateReservation,
    RateVerdict,
    SettleCallback,
    Settlement,
    StateUnavailable,
    Ticket,
    units_to_usd,
    usd_to_units,
)
from concord.state.pipe import Pipe, ReplyError

# KEYS: period hash. ARGV: spent units, ttl seconds ('' = keep). Never lowers the spend.
_BUDGET_SEED = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if tonumber(ARGV[1]) > spent then redis.call('HSET', KEYS[1], 'spent', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# A rate bucket as both scripts read and write it (tokenbucket.py): it stores the units used
# (`u`) as of its stamp (`t`), which drain at limit/window per second; a missing bucket is full.
# A bucket is kept only until it would be full again. Numbers are written with %.17g: Lua's
# tostring keeps 14 digits, which rounds epoch timestamps.
_BUCKET = """
local function bucket_level(key, limit, window, now)
  local s = redis.call('HMGET', key, 'u', 't')
  local used, ts = tonumber(s[1]) or 0, tonumber(s[2]) or now
  if limit <= 0 then return 0, ts end
  if now > ts then used = math.max(0, used - (now - ts) * limit / window) end
  return limit - used, ts
end
local function bucket_store(key, limit, window, level, stamp)
  local u, t = string.format('%.17g', limit - level), string.format('%.17g', stamp)
  redis.call('HSET', key, 'u', u, 't', t)
  local full = 0
  if limit > 0 then full = (limit - level) * window / limit end
  redis.call('PEXPIRE', key, math.ceil(full * 1000) + 1000)
end
"""

# The whole admission of one request. KEYS: rate bucket hashes (nr), then per budget line its
# period hash and lease zset (nb), then the cache entry if one is read. ARGV: now, nr, nb, amount
# units, reservation id, lease expiry, read-cache 1/0, then (limit, cost, window) per bucket, then
# (limit units or 'inf', hard 1/0, ttl or '') per line. Checks everything before writing anything:
# a request refused by a bucket touches no budget, one blocked by a budget charges no bucket.
# Returns {rate ok 1/0, denied bucket, wait, budget ok 1/0, spent, exhausted, blocked, cached}.
_ADMIT = (
    _BUCKET
    + """
local now, nr, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local levels, stamps = {}, {}
local wait, denied = 0, 0
for i = 1, nr do
  local a = 7 + 3 * (i - 1)
  local limit, cost, window = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local level, ts = bucket_level(KEYS[i], limit, window, now)
  levels[i], stamps[i] = level, math.max(now, ts)
  local need = 0
  if limit <= 0 then
    need = window
  elseif level < math.min(cost, limit) then
    need = (math.min(cost, limit) - level) * window / limit
  end
  if need > 0 and (denied == 0 or need > wait) then
    wait, denied = need, i
  end
end
if denied > 0 then
  return {0, denied, string.format('%.17g', wait), 0, {}, {}, 0, false}
end
local b0 = 7 + 3 * nr
local spent, exhausted, blocked = {}, {}, 0
for i = 1, nb do
  local h, z = KEYS[nr + 2 * i - 1], KEYS[nr + 2 * i]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[1], 'LIMIT', 0, 100)) do
    local units = redis.call('HGET', h, 'r:' .. id)
    if units and units ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. units) end
    redis.call('HDEL', h, 'r:' .. id)
    redis.call('ZREM', z, id)
  end
  local s = tonumber(redis.call('HGET', h, 'spent') or '0')
  local r = tonumber(redis.call('HGET', h, 'reserved') or '0')
  spent[i] = s
  local limit = ARGV[b0 + 3 * i - 2]
  if limit ~= 'inf' and s + r >= tonumber(limit) then
    exhausted[#exhausted + 1] = i
    if blocked == 0 and ARGV[b0 + 3 * i - 1] == '1' then blocked = i end
  end
end
if blocked > 0 then return {1, 0, '0', 0, spent, exhausted, blocked, false} end
for i = 1, nr do
  local a = 7 + 3 * (i - 1)
  local limit, window = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3])
  bucket_store(KEYS[i], limit, window, levels[i] - tonumber(ARGV[a + 2]), stamps[i])
end
for i = 1, nb do
  local h, z, ttl = KEYS[nr + 2 * i - 1], KEYS[nr + 2 * i], ARGV[b0 + 3 * i]
  redis.call('HINCRBY', h, 'reserved', ARGV[4])
  redis.call('HSET', h, 'r:' .. ARGV[5], ARGV[4])
  redis.call('ZADD', z, ARGV[6], ARGV[5])
  if ttl ~= '' then
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', z, ttl)
  end
end
local cached = false
if ARGV[7] == '1' then cached = redis.call('GET', KEYS[nr + 2 * nb + 1]) end
return {1, 0, '0', 1, spent, exhausted, 0, cached}
"""
)

# The whole settlement of one request. KEYS: settling rate buckets (nr), budget (hash, zset)
# pairs (nb), then the cache entry if one is stored. ARGV: now, nr, nb, reservation id, actual
# units, cache px ('' = none), cache value, then (limit, refund, window) per bucket, then ttl per
# line. Returns each line's new spend.
_SETTLE = (
    _BUCKET
    + """
local now, nr, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, nr do
  local a = 7 + 3 * (i - 1)
  local limit, refund = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local window = tonumber(ARGV[a + 3])
  local level, ts = bucket_level(KEYS[i], limit, window, now)
  bucket_store(KEYS[i], limit, window, math.min(limit, level + refund), math.max(now, ts))
end
local spent = {}
local b0 = 7 + 3 * nr
for i = 1, nb do
  local h, z = KEYS[nr + 2 * i - 1], KEYS[nr + 2 * i]
  local units = redis.call('HGET', h, 'r:' .. ARGV[4])
  if units then
    if units ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. units) end
    redis.call('HDEL', h, 'r:' .. ARGV[4])
    redis.call('ZREM', z, ARGV[4])
  end
  spent[i] = redis.call('HINCRBY', h, 'spent', ARGV[5])
  if ARGV[b0 + i] ~= '' then redis.call('EXPIRE', h, ARGV[b0 + i]) end
end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[nr + 2 * nb + 1], ARGV[7], 'PX', ARGV[6])
end
return spent
"""
)

# Whatever Redis says (connection refused, a timeout, READONLY from a failover replica, OOM,
# LOADING), the request must still be served (SPEC §1): all of it is "unavailable".
_UNREACHABLE = (ReplyError, OSError)
_bits = random.getrandbits  # reservation ids: unique, not secret (no syscall per request)


def _ttl_arg(ttl: float | None) -> str:
    return "" if ttl is None else str(max(1, int(ttl)))


class _Script:
    """A Lua script and its SHA1, for EVALSHA."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_SCRIPTS = {
    name: _Script(source)
    for name, source in (
        ("budget_seed", _BUDGET_SEED),
        ("admit", _ADMIT),
        ("settle", _SETTLE),
    )
}


def _noscript(reply: object) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


class RedisState:
    """`StateBackend` on one Redis server; keys live under `key_prefix`.

    The scripts touch several keys at once (every rule of a request), so Redis Cluster is not
    supported; a primary with replicas behind one address is.
    """

    def __init__(
        self, pipe: Pipe, *, key_prefix: str = "concord:", budget_lease: float = 900.0
    ) -> None:
        self._pipe = pipe
        pipe.on_connect.extend(("SCRIPT", "LOAD", s.source) for s in _SCRIPTS.values())
        self.key_prefix = key_prefix
        self.budget_lease = budget_lease
        self._failures = 0

    @classmethod
    def from_url(
        cls, url: str, *, key_prefix: str = "concord:", timeout: float = 0.25
    ) -> RedisState:
        """Short timeouts and no retries: a dead Redis must not stall requests. One pipelined
        connection carries every call of this process (see `pipe.Pipe`)."""
        return cls(Pipe.from_url(url, timeout=timeout), key_prefix=key_prefix)

    @property
    def healthy(self) -> bool:
        return True

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def connections(self) -> int:
        """Connections made to Redis so far (one per restart of the server, among others)."""
        return self._pipe.connections

    def _lost(self, exc: BaseException) -> StateUnavailable:
        self._failures += 1
        return StateUnavailable(f"state backend unavailable ({type(exc).__name__})")

    async def _call(self, *args: Any) -> Any:
        """One command, with "cannot reach Redis" turned into `StateUnavailable`."""
        try:
            return await self._pipe.call(*args)
        except _UNREACHABLE as exc:
            raise self._lost(exc) from exc

    async def _eval(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = _SCRIPTS[name]
        try:
            try:
                return await self._pipe.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except ReplyError as exc:
                if not _noscript(exc):
                    raise
                return await self._pipe.call("EVAL", script.source, len(keys), *keys, *args)
        except _UNREACHABLE as exc:
            raise self._lost(exc) from exc

    # -- one call per request (the guards step) --------------------------------------------------

    async def admit(self, ticket: Ticket, now: float | None = None) -> Admitted:
        now = time.time() if now is None else now
        buckets, lines = ticket.buckets, ticket.lines
        units, rid = max(usd_to_units(ticket.amount), 0), f"{_bits(64):016x}"
        read = ticket.cache_key is not None
        args: list[Any] = [repr(now), len(buckets), len(lines), units, rid]
        args += [repr(now + self.budget_lease), "1" if read else "0"]
        keys = [self._key("rl:", b.key) for b in buckets]
        for b in buckets:
            args += [b.limit, b.cost, repr(b.window)]
        for line in lines:
            keys += self._budget_keys(line.key, line.period_id)
            limit = "inf" if math.isinf(line.limit_usd) else str(usd_to_units(line.limit_usd))
            args += [limit, "1" if line.hard else "0", _ttl_arg(line.ttl)]
        if ticket.cache_key is not None:
            keys.append(self._key("c:", ticket.cache_key))
        reply = await self._eval("admit", keys, args)
        rate_ok, denied, wait, budget_ok, spent, exhausted, blocked, cached = reply
        if not rate_ok:
            return Admitted(RateVerdict(False, retry_after=float(wait), denied=int(denied) - 1))
        budget = None
        if lines:
            spent_usd = tuple(units_to_usd(int(x)) for x in spent)
            exhausted_at = tuple(int(i) - 1 for i in exhausted)
            if budget_ok:
                reservation = BudgetReservation(lines, rid, units_to_usd(units))
                budget = BudgetVerdict(True, spent_usd, exhausted_at, None, reservation)
            else:
                budget = BudgetVerdict(False, spent_usd, exhausted_at, int(blocked) - 1)
        if buckets and budget_ok:
            rate = RateVerdict(True, reservation=RateReservation(buckets))
        else:
            rate = _NOTHING_TAKEN
        return Admitted(rate, budget, bytes(cached) if cached is not None else None)

    def settle(self, settlement: Settlement, done: SettleCallback | None = None) -> None:
        self._settle(settlement, time.time(), done)

    def _settle(self, settlement: Settlement, now: float, done: SettleCallback | None) -> None:
        rate = settlement.rate
        todo = [] if rate is None else [b for b in rate.buckets if b.settles]
        todo = [b for b in todo if b.cost != settlement.tokens]
        budget, store = settlement.budget, settlement.store
        lines = budget.lines if budget is not None else ()
        if not todo and not lines and store is None:
            if done is not None:
                done(())
            return
        args: list[Any] = [repr(now), len(todo), len(lines)]
        args += [budget.id if budget else "", max(usd_to_units(settlement.cost), 0)]
        if store is not None and store[2] > 0:
            args += [max(1, int(store[2] * 1000)), store[1]]
        else:
            args += ["", ""]
            store = None
        keys = [self._key("rl:", b.key) for b in todo]
        for b in todo:
            args += [b.limit, b.cost - settlement.tokens, repr(b.window)]
        for line in lines:
            keys += self._budget_keys(line.key, line.period_id)
        args += [_ttl_arg(line.ttl) for line in lines]
        if store is not None:
            keys.append(self._key("c:", store[0]))
        self._send("settle", keys, args, done)

    def _send(
        self, name: str, keys: list[str], args: list[Any], done: SettleCallback | None
    ) -> None:
        """EVALSHA without waiting; after a NOSCRIPT reply, the whole script once more."""
        script = _SCRIPTS[name]

        def answered(reply: Any, retried: bool = False) -> None:
            if _noscript(reply) and not retried:
                command = ("EVAL", script.source, len(keys), *keys, *args)
                self._pipe.send(command, lambda again: answered(again, True))
                return
            if isinstance(reply, BaseException):
                error: BaseException = self._lost(reply)
                if done is not None:
                    done(error)
                return
            if done is not None:
                done(tuple(units_to_usd(int(x)) for x in reply))

        self._pipe.send(("EVALSHA", script.sha, len(keys), *keys, *args), answered)

    async def flush(self) -> None:
        try:
            await self._pipe.drain()
        except _UNREACHABLE as exc:
            raise self._lost(exc) from exc

    # -- one step at a time: the same scripts as admit and settle ----------------------------------

    async def rate_check_and_reserve(
        self, buckets: Sequence[Bucket], now: float | None = None
    ) -> RateVerdict:
        if not buckets:
            return RateVerdict(True, reservation=RateReservation(()))
        return (await self.admit(Ticket(tuple(buckets)), now)).rate

    async def rate_settle(
        self, reservation: RateReservation, actual_tokens: int, now: float | None = None
    ) -> None:
        await self._settled(Settlement(rate=reservation, tokens=actual_tokens), now)

    async def budget_reserve(
        self, lines: Sequence[BudgetLine], amount: float, now: float | None = None
    ) -> BudgetVerdict:
        if not lines:
            return BudgetVerdict(True, ())
        verdict = (await self.admit(Ticket((), tuple(lines), amount), now)).budget
        assert verdict is not None  # admit answers every ticket with lines
        return verdict

    async def budget_settle(
        self, reservation: BudgetReservation, actual: float
    ) -> tuple[float, ...]:
        if not reservation.lines:
            return ()
        return await self._settled(Settlement(budget=reservation, cost=actual))

    async def _settled(self, settlement: Settlement, now: float | None = None) -> tuple[float, ...]:
        """`settle`, waiting for its outcome."""
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any) -> None:
            if not outcome.done():
                outcome.set_result(result)

        self._settle(settlement, time.time() if now is None else now, done)
        result = await outcome
        if isinstance(result, BaseException):
            raise result
        return tuple(result)

    async def budget_spent(self, periods: Sequence[tuple[str, str]]) -> list[float]:
        calls = [self._call("HGET", self._budget_keys(*p)[0], "spent") for p in periods]
        values = await asyncio.gather(*calls)  # one write, one round trip
        return [units_to_usd(int(v)) if v is not None else 0.0 for v in values]

    async def budget_seed(
        self, key: str, period_id: str, spent: float, *, ttl: float | None = None
    ) -> None:
        keys = self._budget_keys(key, period_id)[:1]
        await self._eval("budget_seed", keys, [usd_to_units(spent), _ttl_arg(ttl)])

    def _budget_keys(self, key: str, period_id: str) -> list[str]:
        base = f"{self.key_prefix}b:{key}:{period_id}"
        return [base, base + ":leases"]

    # -- response cache (SPEC §2.5) -----------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        value = await self._call("GET", self._key("c:", key))
        return bytes(value) if value is not None else None

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        # Size is bounded by the TTL and Redis's own maxmemory policy, not by max_entries.
        await self._call("SET", self._key("c:", key), value, "PX", max(1, int(ttl * 1000)))

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._call("PING"))
        except StateUnavailable:
            return False

    async def seeded(self) -> bool:
        """Whether the mark set when budgets were seeded is still there: FLUSHDB, FLUSHALL or an
        eviction that took budget counters most likely took it too (it has no TTL either)."""
        return bool(await self._call("EXISTS", self._key("", SEEDED)))

    async def mark_seeded(self) -> None:
        await self._call("SET", self._key("", SEEDED), "1")

    async def close(self) -> None:
        await self._pipe.close()

    def _key(self, kind: str, key: str) -> str:
        return f"{self.key_prefix}{kind}{key}"


SEEDED = "budgets-seeded"  # the mark `mark_seeded` sets, under the key prefix
_NOTHING_TAKEN = RateVerdict(True)  # admitted by the rate limits without charging a bucket
