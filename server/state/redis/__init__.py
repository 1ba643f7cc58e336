"""The Redis (or Valkey) backend: working state shared by every replica.

    link.py       RedisLink: one client, a 50 ms timeout per operation, a breaker and a
                  probe, so an outage costs one timeout and then nothing until Redis answers
    gates.py      RedisGates: a try's slots and rate budgets in ONE script (GCRA, leases)
    budgets.py    RedisBudgetStore: reserve and settle in one script each; fails closed
    breakers.py   RedisBreakers: local state machines, openings shared within a poll
    responses.py  RedisResponseStore: the cache, per tenant, bounded, with TTL
    watch.py      KeyWatch: the cache keys any replica stored, heard of from Redis
                  (CLIENT TRACKING, broadcast), so a miss costs no round trip

Each store has a documented fallback for when Redis does not answer (see its
module); the SQL ledger stays the truth, and budgets re-read it when Redis
comes back empty.
"""

from server.state.redis.breakers import RedisBreakers
from server.state.redis.budgets import RedisBudgetStore
from server.state.redis.gates import RedisGates
from server.state.redis.link import RedisDownError, RedisLink
from server.state.redis.responses import RedisResponseStore

__all__ = [
    "RedisBreakers",
    "RedisBudgetStore",
    "RedisDownError",
    "RedisGates",
    "RedisLink",
    "RedisResponseStore",
]
