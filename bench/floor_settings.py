"""The floor: Django serving nothing but the ceiling's transaction (bench_orders.py --floor).

What is the most a Django process on this machine can do per order, whatever our code
does? This app answers POST /api/v1/challenges/{id}/orders with pgbench's equivalent
transaction (bench_orders.PGBENCH_SCRIPT: lock the challenge row, read positions, insert
the order, upsert the position, update the challenge, insert ledger and audit rows) run
through Django's connection with the same prepared statements as the real order path,
and a small JSON 201. No middleware, no DRF, no authentication, throttle, idempotency
record, validation, netting, risk check or live event. Served and driven exactly as the
real application is, it is the upper bound of any order path written in Django here;
its orders/s against pgbench's ceiling says what the serving stack alone leaves.
"""

from tradesense.settings import *  # noqa: F403

MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.floor_urls"
