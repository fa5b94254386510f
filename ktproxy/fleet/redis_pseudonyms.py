"""Conversation pseudonyms in Redis, values encrypted at rest.

One hash per conversation, `{prefix}pn:{group}:{sha256(conversation id)}`, expiring
`ttl` seconds after its last turn:

- `v:{hmac(kind, value)}` -> placeholder (finds a value's placeholder without storing it)
- `t:{placeholder}`       -> the value, AES-GCM encrypted (the hash key is its AAD, so a
  value copied into another conversation does not decrypt)
- `n:{KIND}`              -> the last number given to that kind

A Lua script looks up or assigns every value of a request atomically, so two gateways
serving turns of one conversation at once never give two values one placeholder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ktproxy.config import OnBackendError
from ktproxy.fleet.redis_client import BACKEND_ERRORS, Guard

MIN_SECRET = 16  # characters of `state.redis.encryption_key_ref`

# KEYS: the conversation's hash. ARGV: ttl seconds, then (index, kind, ciphertext)
# triples. Returns the whole hash (HGETALL's flat list).
ASSIGN = """
for i = 2, #ARGV, 3 do
  local f = 'v:' .. ARGV[i]
  if redis.call('HEXISTS', KEYS[1], f) == 0 then
    local n = redis.call('HINCRBY', KEYS[1], 'n:' .. ARGV[i + 1], 1)
    local token = '<' .. ARGV[i + 1] .. '_' .. n .. '>'
    redis.call('HSET', KEYS[1], f, token, 't:' .. token, ARGV[i + 2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


def _derive(secret: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
    return hkdf.derive(secret.encode())


class RedisPseudonyms:
    """`PseudonymVault` shared by every gateway using the same key prefix and secret."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        guard: Guard,
        on_error: OnBackendError,
        secret: str | None,
    ) -> None:
        self._prefix = prefix
        self._guard = guard
        self._on_error: OnBackendError = on_error
        self._assign = client.register_script(ASSIGN)
        self._aead: AESGCM | None = None
        self._index_key = b""
        if secret is not None:
            if len(secret) < MIN_SECRET:
                raise ValueError(
                    f"the pseudonym encryption secret must have at least {MIN_SECRET} characters"
                )
            self._aead = AESGCM(_derive(secret, b"ktproxy pseudonym values"))
            self._index_key = _derive(secret, b"ktproxy pseudonym index")

    def key(self, group: str, conversation: str) -> str:
        """The conversation's hash (the id is hashed: it may be long or carry anything)."""
        digest = hashlib.sha256(conversation.encode()).hexdigest()[:32]
        return f"{self._prefix}pn:{group}:{digest}"

    async def assign(
        self, group: str, conversation: str, ttl: float, values: Sequence[tuple[str, str]]
    ) -> dict[str, str] | None:
        aead = self._aead
        if aead is None:  # the config check refuses this; kept for direct callers
            raise ValueError("scope: conversation with redis needs state.redis.encryption_key_ref")
        key = self.key(group, conversation)
        aad = key.encode()
        args: list[str | bytes | int] = [max(1, int(ttl))]
        for value, kind in values:
            index = hmac.new(self._index_key, f"{kind}\0{value}".encode(), "sha256").hexdigest()
            nonce = os.urandom(12)
            args += [index, kind, nonce + aead.encrypt(nonce, value.encode(), aad)]
        if not self._guard.available():
            self._backend_error(None)
            return None
        try:
            reply = await self._assign(keys=[key], args=args)
        except BACKEND_ERRORS as exc:
            self._backend_error(exc)
            return None
        self._guard.succeeded()
        table: dict[str, str] = {}
        for field, stored in zip(reply[::2], reply[1::2], strict=True):
            if not field.startswith(b"t:"):
                continue
            try:
                plain = aead.decrypt(stored[:12], stored[12:], aad)
            except InvalidTag:
                # Written under another secret (rotated): that placeholder is not restored.
                continue
            table[field[2:].decode()] = plain.decode()
        return table

    def _backend_error(self, exc: BaseException | None) -> None:
        unavailable = self._guard.failed("pseudonyms", self._on_error, exc)
        if unavailable is not None:
            raise unavailable
