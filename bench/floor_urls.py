"""The floor app's one view (bench/floor_settings.py says what it is for)."""

import json

from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.urls import path

from tradesense.common import rawsql

_STATEMENTS = (
    "SELECT id, version, balance, status, rules FROM challenges_challenge WHERE id = %s FOR UPDATE",
    "SELECT id, qty, avg_entry_price FROM challenges_position WHERE challenge_id = %s",
    "INSERT INTO challenges_order (challenge_id, client_order_id, instrument_id, side, qty, type, status, filled_qty, "
    "filled_avg_price, realized_pl, reason, filled_at, created_at) VALUES (%s, %s, "
    "(SELECT id FROM challenges_instrument WHERE symbol = 'EURUSD'), %s, 0.01, 'market', 'filled', 0.01, 1.085, 0, "
    "'', now(), now()) RETURNING id",
    "INSERT INTO challenges_position (challenge_id, instrument_id, qty, avg_entry_price, opened_at, updated_at) "
    "VALUES (%s, (SELECT id FROM challenges_instrument WHERE symbol = 'EURUSD'), 0.01, 1.085, now(), now()) "
    "ON CONFLICT (challenge_id, instrument_id) DO UPDATE SET qty = challenges_position.qty + 0.01, updated_at = now()",
    "UPDATE challenges_challenge SET balance = balance + 0.01, equity = balance + 0.01, version = version + 1, "
    "last_trade_at = now(), updated_at = now() WHERE id = %s",
    "INSERT INTO challenges_ledgerentry (challenge_id, kind, amount, balance_after, memo, created_at) "
    "VALUES (%s, 'realized_pl', 0.01, 0, 'floor', now())",
    "INSERT INTO common_auditevent (created_at, actor_label, action, object_type, object_id, before, after, reason) "
    "VALUES (now(), 'bench', 'order.filled', 'challenges.order', '0', '{}', '{\"qty\": \"0.01\"}', 'floor')",
)


def order(request, challenge_id: int):
    if request.method != "POST":
        return HttpResponse(status=405)
    body = json.loads(request.body)
    with transaction.atomic(), rawsql.cursor() as cursor:
        cursor.execute(_STATEMENTS[0], [challenge_id])
        if cursor.fetchone() is None:
            return JsonResponse({"error": {"code": "not_found"}}, status=404)
        cursor.execute(_STATEMENTS[1], [challenge_id])
        cursor.fetchall()
        cursor.execute(_STATEMENTS[2], [challenge_id, body["client_order_id"], body["side"]])
        order_id = cursor.fetchone()[0]
        for sql in _STATEMENTS[3:]:
            cursor.execute(sql, [challenge_id] if "%s" in sql else [])
    return JsonResponse({"id": order_id, "symbol": "EURUSD", "side": body["side"], "status": "filled"}, status=201)


urlpatterns = [path("api/v1/challenges/<int:challenge_id>/orders", order)]
