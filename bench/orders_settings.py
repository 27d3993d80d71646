"""Settings variants for bench_orders.py experiments (DJANGO_SETTINGS_MODULE=bench.orders_settings).

The application's settings, plus what BENCH_VARIANT names, so a serving or database
option can be measured before anyone proposes it for tradesense/settings.py:
  prepared   psycopg server-side binding with prepare_threshold=5 for every query: the
             ORM's are prepared after 5 uses on a connection too (the order path's raw
             statements are prepared anyway, see tradesense/common/rawsql.py).
  serverbinding  server-side binding alone (Django's default prepare_threshold=None:
             nothing is prepared; what the earlier "prepared" variant measured).
  noprepare  the order path's raw statements through Django's ordinary client-side
             binding cursor, unprepared (a before/after of rawsql.cursor()).
  nocheck    no pool health check on checkout (saves a round trip per request; a dead
             connection is then found by the request that uses it).
  noevents   no channel layer: live events are skipped (measures their cost only).
  nothrottle no order throttling (measures its cost only).
  oldevents  the live-event transport as it was before the profile (a before/after).
  perframe   one channel-layer message per frame (three per order), as before live
             events were batched per change (a before/after).
"""

import os

from tradesense.settings import *  # noqa: F403

_variants = set(filter(None, os.environ.get("BENCH_VARIANT", "").split(",")))
_db = DATABASES["default"]  # noqa: F405
if "prepared" in _variants:
    # Django leaves prepare_threshold at None (never prepare) unless it is given.
    _db.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
if "serverbinding" in _variants:
    _db.setdefault("OPTIONS", {})["server_side_binding"] = True
if "nocheck" in _variants:
    # Django passes check=ConnectionPool.check_connection when CONN_HEALTH_CHECKS is on
    # (the pool options never hold "check": popping it, as this variant once did, measured
    # nothing).
    _db["CONN_HEALTH_CHECKS"] = False
if "noprepare" in _variants:
    from django.db import connection as _connection

    from tradesense.common import rawsql

    rawsql.cursor = lambda: _connection.cursor()
if "noevents" in _variants:
    CHANNEL_LAYERS = {}
if "nothrottle" in _variants:
    REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"orders": None, "auth": None}}  # noqa: F405
if "oldevents" in _variants:
    # The live-event transport before the long-lived sender loop (git history of
    # tradesense/common/realtime.py): async_to_sync per frame. For a before/after figure.
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from tradesense.common import realtime

    def _send_per_call_loop(*, group, frames):
        try:
            for frame in frames:
                async_to_sync(get_channel_layer().group_send)(group, {"type": "stream.event", "frame": frame})
        except Exception:  # noqa: BLE001
            return False
        return True

    realtime.send_frames_now = _send_per_call_loop
if "perframe" in _variants:
    # One group message per frame through the sender loop (before one message per change).
    from tradesense.common import realtime

    _send_batch = realtime.send_frames_now

    def _send_each(*, group, frames):
        return all([_send_batch(group=group, frames=[frame]) for frame in frames])

    realtime.send_frames_now = _send_each
