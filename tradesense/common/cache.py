"""Cache backends that count hits and misses for /metrics (the seed's cache hit rate)."""

from django.core.cache.backends.locmem import LocMemCache
from django_redis.cache import RedisCache

from tradesense.common.metrics import CACHE_REQUESTS

_MISSING = object()


class _Counting:
    def get(self, key, default=None, version=None, **kwargs):
        value = super().get(key, _MISSING, version=version, **kwargs)
        if value is _MISSING:
            CACHE_REQUESTS.labels(result="miss").inc()
            return default
        CACHE_REQUESTS.labels(result="hit").inc()
        return value


class CountingRedisCache(_Counting, RedisCache):
    """django-redis with IGNORE_EXCEPTIONS: Redis down counts as a miss, never an error."""


class CountingLocMemCache(_Counting, LocMemCache):
    pass
