"""Rate limits in Redis: the in-process limiter's checks as atomic Lua scripts.

The same algorithms as `ktproxy.limits.LocalRateLimiter` (GCRA for requests per
minute, a minute's token bucket for tokens per minute), run inside Redis so every
gateway and worker sharing the key prefix draws from one allowance. Times come from
Redis (`TIME`), so the gateways' clocks do not matter. Keys, with their TTLs set to
when they would be back to "full" (an absent key is a full allowance):

- `{prefix}rl:{group}:requests` - the GCRA theoretical arrival time (seconds)
- `{prefix}rl:{group}:tokens`   - a hash: token balance and the time it was taken

Scripts run by EVALSHA, falling back to loading them on NOSCRIPT (redis-py's
`Script`), e.g. after a Redis restart.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from ktproxy.config import OnBackendError, RateLimits
from ktproxy.fleet.redis_client import BACKEND_ERRORS, Guard
from ktproxy.limits import Refusal

# KEYS: requests key, tokens key. ARGV: requests per minute, tokens per minute (0: none).
# Returns nil when admitted, else {kind, retry-after seconds as a string}.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
if tpm > 0 then
  local b = redis.call('HMGET', KEYS[2], 'tokens', 'stamp')
  local tokens = tonumber(b[1])
  if tokens ~= nil then
    tokens = math.min(tpm, tokens + (now - tonumber(b[2])) * tpm / 60)
    if tokens <= 0 then
      return {'tokens', string.format('%.6f', (1 - tokens) * 60 / tpm)}
    end
  end
end
if rpm > 0 then
  local interval = 60 / rpm
  local burst = 60 - interval
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  if tat - now > burst then
    return {'requests', string.format('%.6f', tat - now - burst)}
  end
  tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX',
             math.ceil((tat - now) * 1000) + 1000)
end
return false
"""

# KEYS: tokens key. ARGV: tokens per minute, tokens spent. May overdraw the bucket.
SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tpm = tonumber(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1])
if tokens == nil then
  tokens = tpm
else
  tokens = math.min(tpm, tokens + (now - tonumber(b[2])) * tpm / 60)
end
tokens = tokens - tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'stamp', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((tpm - tokens) * 60000 / tpm) + 1000)
return 1
"""


class RedisRateLimiter:
    """`RateLimiter` whose allowances live in Redis, shared by every gateway."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, guard: Guard, on_error: OnBackendError
    ) -> None:
        self._prefix = prefix
        self._guard = guard
        self._on_error: OnBackendError = on_error
        self._admit = client.register_script(ADMIT)
        self._spend = client.register_script(SPEND)
        # (group, "requests" | "tokens") -> refusals by this process, for /metrics
        self.refusals: dict[tuple[str, str], int] = {}

    def _keys(self, group: str) -> list[str]:
        return [f"{self._prefix}rl:{group}:requests", f"{self._prefix}rl:{group}:tokens"]

    async def admit(self, group: str, limits: RateLimits) -> Refusal | None:
        rpm = limits.requests_per_minute or 0
        tpm = limits.tokens_per_minute or 0
        if not (rpm or tpm):
            return None
        if not self._guard.available():
            self._backend_error(None)
            return None
        try:
            reply = await self._admit(keys=self._keys(group), args=[rpm, tpm])
        except BACKEND_ERRORS as exc:
            self._backend_error(exc)
            return None
        self._guard.succeeded()
        if reply is None:
            return None
        if reply[0] == b"tokens":
            refusal = Refusal("tokens", tpm, float(reply[1]))
        else:
            refusal = Refusal("requests", rpm, float(reply[1]))
        kind = refusal.kind
        key = (group, kind)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        return refusal

    async def spend_tokens(self, group: str, limits: RateLimits, tokens: int) -> None:
        tpm = limits.tokens_per_minute
        if tpm is None or tokens <= 0 or not self._guard.available():
            return
        try:
            await self._spend(keys=self._keys(group)[1:], args=[tpm, tokens])
        except BACKEND_ERRORS as exc:
            # Lost usage only makes the limit looser; never fail a finished request.
            self._guard.failed("rate limits", "fail-open", exc)
        else:
            self._guard.succeeded()

    def _backend_error(self, exc: BaseException | None) -> None:
        unavailable = self._guard.failed("rate limits", self._on_error, exc)
        if unavailable is not None:
            raise unavailable
