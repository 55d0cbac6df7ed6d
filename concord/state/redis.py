"""Redis state: limits and budgets exact across workers and replicas (SPEC §1, §2.6, §2.7).

Every multi-step update is one Lua script, run with EVALSHA (redis-py's `register_script` loads it
on a NOSCRIPT reply), so concurrent gateways never interleave inside a check-and-reserve. The
scripts mirror `tokenbucket.py` and `MemoryState`; the shared test suite holds both to the same
behaviour. Every driver error becomes `StateUnavailable` (its message names only the error type).
The client never retries on its own: replaying a reservation script after a timeout could count
one request twice.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from concord.state.backend import (
    Bucket,
    BudgetLine,
    BudgetReservation,
    BudgetVerdict,
    RateReservation,
    RateVerdict,
    StateUnavailable,
    units_to_usd,
    usd_to_units,
)

# KEYS: bucket hashes {l: level, t: updated-at}. ARGV: now, then (limit, cost, window) per key.
# Numbers are written with %.17g: Lua's tostring keeps 14 digits, which rounds epoch timestamps.
# Checks every bucket first and writes only if all have room: all-or-nothing.
_RATE_RESERVE = """
local now = tonumber(ARGV[1])
local levels, stamps = {}, {}
local wait, denied = 0, 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local window = tonumber(ARGV[3 * i + 1])
  local s = redis.call('HMGET', KEYS[i], 'l', 't')
  local level, ts = tonumber(s[1]), tonumber(s[2]) or now
  if level == nil or limit <= 0 then
    level = math.max(limit, 0)
  elseif now > ts then
    level = math.min(limit, level + (now - ts) * limit / window)
  end
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
  return {0, denied, string.format('%.17g', wait)}
end
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local window = tonumber(ARGV[3 * i + 1])
  local level = levels[i] - tonumber(ARGV[3 * i])
  local l, t = string.format('%.17g', level), string.format('%.17g', stamps[i])
  redis.call('HSET', KEYS[i], 'l', l, 't', t)
  local full = 0
  if limit > 0 then full = (limit - level) * window / limit end
  redis.call('PEXPIRE', KEYS[i], math.ceil(full * 1000) + 1000)
end
return {1, 0, '0'}
"""

# KEYS: bucket hashes. ARGV: now, then (limit, refund, window) per key; refund may be negative.
_RATE_SETTLE = """
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local refund = tonumber(ARGV[3 * i])
  local window = tonumber(ARGV[3 * i + 1])
  local s = redis.call('HMGET', KEYS[i], 'l', 't')
  local level, ts = tonumber(s[1]), tonumber(s[2]) or now
  if level == nil or limit <= 0 then
    level = math.max(limit, 0)
  elseif now > ts then
    level = math.min(limit, level + (now - ts) * limit / window)
  end
  level = math.min(limit, level + refund)
  local l, t = string.format('%.17g', level), string.format('%.17g', math.max(now, ts))
  redis.call('HSET', KEYS[i], 'l', l, 't', t)
  local full = 0
  if limit > 0 then full = (limit - level) * window / limit end
  redis.call('PEXPIRE', KEYS[i], math.ceil(full * 1000) + 1000)
end
return 1
"""

# KEYS: per budget line, its period hash {spent, reserved, r:<id>: units} and lease zset
# {id: expiry}. ARGV: now, amount units, id, lease expiry, then (limit units or 'inf', hard 1/0,
# ttl seconds or '') per line. Units stay strings when handed back to Redis: Lua prints a large
# number in exponent form, which HINCRBY rejects.
_BUDGET_RESERVE = """
local n = #KEYS / 2
local spent, exhausted, blocked = {}, {}, 0
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[1], 'LIMIT', 0, 100)) do
    local units = redis.call('HGET', h, 'r:' .. id)
    if units and units ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. units) end
    redis.call('HDEL', h, 'r:' .. id)
    redis.call('ZREM', z, id)
  end
  local s = tonumber(redis.call('HGET', h, 'spent') or '0')
  local r = tonumber(redis.call('HGET', h, 'reserved') or '0')
  spent[i] = s
  local limit = ARGV[3 * i + 2]
  if limit ~= 'inf' and s + r >= tonumber(limit) then
    exhausted[#exhausted + 1] = i
    if blocked == 0 and ARGV[3 * i + 3] == '1' then blocked = i end
  end
end
if blocked > 0 then return {0, spent, exhausted, blocked} end
for i = 1, n do
  local h, z, ttl = KEYS[2 * i - 1], KEYS[2 * i], ARGV[3 * i + 4]
  redis.call('HINCRBY', h, 'reserved', ARGV[2])
  redis.call('HSET', h, 'r:' .. ARGV[3], ARGV[2])
  redis.call('ZADD', z, ARGV[4], ARGV[3])
  if ttl ~= '' then
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', z, ttl)
  end
end
return {1, spent, exhausted, 0}
"""

# KEYS: (period hash, lease zset) per line. ARGV: id, actual units, then ttl per line.
# An id without a lease (expired, or replayed after an outage) only adds the spend.
_BUDGET_SETTLE = """
local spent = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local units = redis.call('HGET', h, 'r:' .. ARGV[1])
  if units then
    if units ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. units) end
    redis.call('HDEL', h, 'r:' .. ARGV[1])
    redis.call('ZREM', z, ARGV[1])
  end
  spent[i] = redis.call('HINCRBY', h, 'spent', ARGV[2])
  if ARGV[i + 2] ~= '' then redis.call('EXPIRE', h, ARGV[i + 2]) end
end
return spent
"""

# KEYS: period hash. ARGV: spent units, ttl seconds ('' = keep). Never lowers the spend.
_BUDGET_SEED = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if tonumber(ARGV[1]) > spent then redis.call('HSET', KEYS[1], 'spent', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# Not only connection errors: a failover replica answers READONLY, a full one OOM, a loading one
# LOADING. Whatever Redis says, the request must still be served (SPEC §1).
_UNREACHABLE = (RedisError, OSError)


def _ttl_arg(ttl: float | None) -> str:
    return "" if ttl is None else str(max(1, int(ttl)))


class RedisState:
    """`StateBackend` on one Redis server; keys live under `key_prefix`.

    The scripts touch several keys at once (every rule of a request), so Redis Cluster is not
    supported; a primary with replicas behind one address is.
    """

    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str = "concord:", budget_lease: float = 900.0
    ) -> None:
        self._redis = client
        self.key_prefix = key_prefix
        self.budget_lease = budget_lease
        self._rate_reserve = client.register_script(_RATE_RESERVE)
        self._rate_settle = client.register_script(_RATE_SETTLE)
        self._budget_reserve = client.register_script(_BUDGET_RESERVE)
        self._budget_settle = client.register_script(_BUDGET_SETTLE)
        self._budget_seed = client.register_script(_BUDGET_SEED)
        self._failures = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "concord:",
        timeout: float = 0.25,
        max_connections: int = 256,
    ) -> RedisState:
        """Short socket timeouts and no retries: a dead Redis must not stall requests.

        A connection carries one command at a time, so the pool must be as large as the calls in
        flight; when it is exhausted a call waits for a free connection (up to 1 s) instead of
        failing, because a busy gateway is not a Redis outage.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=max(timeout, 1.0),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(aioredis.Redis.from_pool(pool), key_prefix=key_prefix)

    @property
    def healthy(self) -> bool:
        return True

    @property
    def failures(self) -> int:
        return self._failures

    async def _call(self, op: Any) -> Any:
        """Await a driver call, turning "cannot reach Redis" into `StateUnavailable`."""
        try:
            return await op
        except _UNREACHABLE as exc:
            self._failures += 1
            raise StateUnavailable(f"state backend unavailable ({type(exc).__name__})") from exc

    # -- rate limits (SPEC §2.7) --------------------------------------------------------------

    async def rate_check_and_reserve(
        self, buckets: Sequence[Bucket], now: float | None = None
    ) -> RateVerdict:
        if not buckets:
            return RateVerdict(True, reservation=RateReservation(()))
        now = time.time() if now is None else now
        args: list[Any] = [repr(now)]
        for b in buckets:
            args += [b.limit, b.cost, repr(b.window)]
        keys = [self._key("rl:", b.key) for b in buckets]
        allowed, denied, wait = await self._call(self._rate_reserve(keys=keys, args=args))
        if allowed:
            return RateVerdict(True, reservation=RateReservation(tuple(buckets)))
        return RateVerdict(False, retry_after=float(wait), denied=int(denied) - 1)

    async def rate_settle(
        self, reservation: RateReservation, actual_tokens: int, now: float | None = None
    ) -> None:
        todo = [b for b in reservation.buckets if b.settles and b.cost != actual_tokens]
        if not todo:
            return
        now = time.time() if now is None else now
        args: list[Any] = [repr(now)]
        for b in todo:
            args += [b.limit, b.cost - actual_tokens, repr(b.window)]
        keys = [self._key("rl:", b.key) for b in todo]
        await self._call(self._rate_settle(keys=keys, args=args))

    # -- budgets (SPEC §2.6) ------------------------------------------------------------------

    async def budget_reserve(
        self, lines: Sequence[BudgetLine], amount: float, now: float | None = None
    ) -> BudgetVerdict:
        if not lines:
            return BudgetVerdict(True, ())
        now = time.time() if now is None else now
        units, rid = max(usd_to_units(amount), 0), secrets.token_hex(8)
        args: list[Any] = [repr(now), units, rid, repr(now + self.budget_lease)]
        keys: list[str] = []
        for line in lines:
            keys += self._budget_keys(line.key, line.period_id)
            limit = "inf" if math.isinf(line.limit_usd) else str(usd_to_units(line.limit_usd))
            args += [limit, "1" if line.hard else "0", _ttl_arg(line.ttl)]
        ok, spent, exhausted, blocked = await self._call(self._budget_reserve(keys=keys, args=args))
        spent_usd = tuple(units_to_usd(int(x)) for x in spent)
        lines_out = tuple(int(i) - 1 for i in exhausted)
        if not ok:
            return BudgetVerdict(False, spent_usd, lines_out, int(blocked) - 1)
        reservation = BudgetReservation(tuple(lines), rid, units_to_usd(units))
        return BudgetVerdict(True, spent_usd, lines_out, None, reservation)

    async def budget_settle(
        self, reservation: BudgetReservation, actual: float
    ) -> tuple[float, ...]:
        if not reservation.lines:
            return ()
        keys: list[str] = []
        args: list[Any] = [reservation.id, max(usd_to_units(actual), 0)]
        for line in reservation.lines:
            keys += self._budget_keys(line.key, line.period_id)
            args.append(_ttl_arg(line.ttl))
        spent = await self._call(self._budget_settle(keys=keys, args=args))
        return tuple(units_to_usd(int(x)) for x in spent)

    async def budget_spent(self, periods: Sequence[tuple[str, str]]) -> list[float]:
        if len(periods) == 1:
            values = [
                await self._call(self._redis.hget(self._budget_keys(*periods[0])[0], "spent"))
            ]
        else:
            pipe = self._redis.pipeline(transaction=False)
            for key, period_id in periods:
                pipe.hget(self._budget_keys(key, period_id)[0], "spent")
            values = await self._call(pipe.execute())
        return [units_to_usd(int(v)) if v is not None else 0.0 for v in values]

    async def budget_seed(
        self, key: str, period_id: str, spent: float, *, ttl: float | None = None
    ) -> None:
        keys = self._budget_keys(key, period_id)[:1]
        await self._call(self._budget_seed(keys=keys, args=[usd_to_units(spent), _ttl_arg(ttl)]))

    def _budget_keys(self, key: str, period_id: str) -> list[str]:
        base = f"{self.key_prefix}b:{key}:{period_id}"
        return [base, base + ":leases"]

    # -- response cache (SPEC §2.5) -----------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        value = await self._call(self._redis.get(self._key("c:", key)))
        return bytes(value) if value is not None else None

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        # Size is bounded by the TTL and Redis's own maxmemory policy, not by max_entries.
        await self._call(self._redis.set(self._key("c:", key), value, px=max(1, int(ttl * 1000))))

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self._redis.ping()))
        except StateUnavailable:
            return False

    async def close(self) -> None:
        await self._redis.aclose()

    def _key(self, kind: str, key: str) -> str:
        return f"{self.key_prefix}{kind}{key}"
