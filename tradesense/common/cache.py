"""Read-through caching of hot, rarely written reads, with hits and misses counted for
/metrics (the seed's cache hit rate).

Only CachedRead look-ups are counted: the rate then says how well the reads we chose to
cache are served, and is not diluted by health probes or throttling counters that use
the same backend.

Consistency: a writer calls `invalidate()` (challenges/catalogue.py does it on save), which
deletes the entry at once and again when its transaction commits; a reader stores what it
read only when its own transaction commits, so a rolled-back write is never cached. The
remaining race (a read that started before a commit storing its value after the commit's
delete) and any missed invalidation (a write in a process that never imported the
receivers, a queryset .update(), the cache unreachable during the delete) last at most
`timeout` seconds. With the cache down every look-up is a miss, read from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.db import transaction
from django_redis.cache import RedisCache

from tradesense.common.metrics import CACHE_REQUESTS

T = TypeVar("T")
_MISSING = object()


class CachedRead:
    """One cached value, named `name` in the metric's `cache` label."""

    def __init__(self, name: str, *, timeout: float = 60.0, key_suffix: Callable[[], str] | None = None):
        self.name = name
        self.timeout = timeout
        # The suffix changes the key when the cached value's shape does (a model's
        # fields), so replicas of two releases never read each other's entries.
        self._key_suffix = key_suffix
        self.hits = CACHE_REQUESTS.labels(cache=name, result="hit")
        self.misses = CACHE_REQUESTS.labels(cache=name, result="miss")

    @property
    def key(self) -> str:
        suffix = self._key_suffix() if self._key_suffix else "1"
        return f"read:{self.name}:{suffix}"

    def get(self, compute: Callable[[], T]) -> T:
        key = self.key
        value = cache.get(key, _MISSING)
        if value is not _MISSING:
            self.hits.inc()
            return value
        self.misses.inc()
        value = compute()
        transaction.on_commit(lambda: cache.set(key, value, self.timeout), robust=True)
        return value

    def invalidate(self) -> None:
        key = self.key
        cache.delete(key)  # the writer's own later reads, inside its transaction
        transaction.on_commit(lambda: cache.delete(key), robust=True)  # everybody else's


# The names settings.CACHES uses; the backends no longer count every look-up (above).
CountingRedisCache = RedisCache
CountingLocMemCache = LocMemCache
