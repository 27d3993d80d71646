"""The order throttle on Redis counters (tradesense/common/throttling.py), against the
real Redis of the suite: the sliding window, Retry-After, concurrency, and a Redis
outage (requests are allowed, as with django-redis's IGNORE_EXCEPTIONS)."""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import pytest
from django.core.cache import cache

from tradesense.common import throttling
from tradesense.common.throttling import RedisScopedRateThrottle, throttle_reset

pytestmark = pytest.mark.skipif(
    throttling._redis_client() is None, reason="the Redis throttle needs REDIS_URL (make test sets it)"
)

VIEW = SimpleNamespace(throttle_scope="orders")


class Clocked(RedisScopedRateThrottle):
    THROTTLE_RATES = {"orders": "3/min"}
    now_is = 0.0

    def timer(self):
        return self.now_is


@pytest.fixture
def user():
    ident = int(uuid.uuid4().int % 10**9)
    throttle_reset(scope="orders", ident=ident)
    yield SimpleNamespace(pk=ident, is_authenticated=True)
    throttle_reset(scope="orders", ident=ident)


def ask(user, at: float) -> tuple[bool, float | None]:
    throttle = Clocked()
    Clocked.now_is = at
    request = SimpleNamespace(user=user, META={})
    allowed = throttle.allow_request(request, VIEW)
    return allowed, (None if allowed else throttle.wait())


def test_the_window_slides_and_retry_after_says_when(user):
    base = 6_000_000 * 60.0  # the start of a minute window
    assert [ask(user, base + 10 + i)[0] for i in range(3)] == [True, True, True]
    allowed, wait = ask(user, base + 20)
    assert allowed is False
    # This window is full: wait for it to end (40 s), then until 3 x (1 - t/60) < 3: at once.
    assert wait == pytest.approx(40.0)
    # 5 s into the next window 3 x 55/60 = 2.75 of the last minute's requests still count.
    assert ask(user, base + 65)[0] is True  # 2.75 + 0 < 3
    allowed, wait = ask(user, base + 66)  # 2.70 + 1 >= 3
    assert allowed is False
    # 3 x (1 - t/60) + 1 < 3 from t = 20 s into the window: 14 s from now.
    assert wait == pytest.approx(14.0)
    assert ask(user, base + 80.5)[0] is True  # 3 x 39.5/60 = 1.975, + 1 < 3


def test_a_refused_request_is_not_counted(user):
    base = 6_000_001 * 60.0
    for i in range(3):
        assert ask(user, base + i)[0] is True
    assert [ask(user, base + 5 + i)[0] for i in range(10)] == [False] * 10
    # Next window, 30 s in: 3 x 0.5 = 1.5 from the last minute (6.5 had the ten refusals
    # counted, and all three would be refused): 1.5, 2.45, then 3.4 >= 3.
    assert [ask(user, base + 90 + i)[0] for i in range(3)] == [True, True, False]


def test_concurrent_requests_are_each_counted_once(user):
    # DRF's history throttle reads, then writes one list: two requests can read the same
    # list and both be allowed past the limit. The counters are changed atomically.
    class Fast(RedisScopedRateThrottle):
        THROTTLE_RATES = {"orders": "10/hour"}

    request = SimpleNamespace(user=user, META={})
    results: list[bool] = []
    barrier = threading.Barrier(20)

    def one():
        barrier.wait()
        results.append(Fast().allow_request(request, VIEW))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 10 + [True] * 10


def test_a_redis_outage_lets_requests_through(user, monkeypatch):
    class Down:
        def register_script(self, _source):
            def _run(**_kwargs):
                raise ConnectionError("Redis is down")

            return _run

    with monkeypatch.context() as patch:
        patch.setattr(throttling, "_redis_client", lambda: Down())
        patch.setattr(RedisScopedRateThrottle, "_scripts", {})
        assert all(ask(user, 100.0 + i)[0] for i in range(10))


def test_without_redis_drf_s_own_throttle_runs(user, monkeypatch):
    cache.delete(f"throttle_orders_{user.pk}")
    with monkeypatch.context() as patch:
        patch.setattr(throttling, "_redis_client", lambda: None)
        assert [ask(user, 500.0 + i)[0] for i in range(4)] == [True, True, True, False]
    cache.delete(f"throttle_orders_{user.pk}")
