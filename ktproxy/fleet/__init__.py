"""Where rate-limit and budget counters live: in the process, or shared in Redis.

`backends.open_backend` picks the implementation named by the config's `state:`
section; the Redis modules are imported only when a config names them, so the
embedded default never needs (or imports) a Redis client.
"""
