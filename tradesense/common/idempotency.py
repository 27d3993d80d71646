"""Idempotency-Key for creating POSTs (API.md): a replay returns the first response.

The record is inserted in the same transaction as the work it guards. A concurrent
duplicate blocks on the unique index until the first commits, then replays its
answer; a request that fails (4xx) rolls back, record included, so it can be retried.

Why raw SQL: the record is written on every order (the hot path, docs/performance.md).
`INSERT ... ON CONFLICT DO NOTHING RETURNING id` claims the key in one statement that
cannot fail, where the ORM needed a savepoint around a create that might (four round
trips, about 1 ms of Python CPU, against 0.1 ms); the same unique index decides, so a
concurrent duplicate still waits for the first transaction and then finds its row.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from rest_framework.response import Response

from tradesense.common import rawsql
from tradesense.common.errors import IdempotencyKeyReused, InvalidInput, StateConflict
from tradesense.common.models import IdempotencyRecord

HEADER = "Idempotency-Key"

_TABLE = IdempotencyRecord._meta.db_table
_CLAIM_SQL = (
    f'INSERT INTO "{_TABLE}" ("scope", "key", "fingerprint", "created_at") VALUES (%s, %s, %s, %s) '  # nosec B608
    'ON CONFLICT ("scope", "key") DO NOTHING RETURNING "id"'
)
_READ_SQL = f'SELECT "fingerprint", "status_code", "response_body" FROM "{_TABLE}" WHERE "scope" = %s AND "key" = %s'  # nosec B608
_ANSWER_SQL = f'UPDATE "{_TABLE}" SET "status_code" = %s, "response_body" = %s WHERE "id" = %s'  # nosec B608
_BODY_FIELD = IdempotencyRecord._meta.get_field("response_body")


# Body fields left out of the fingerprint, not even hashed: passwords (registration). A
# fast hash of a password, keyed or not, is a copy open to offline guessing far faster than
# the user's own PBKDF2 hash (with SECRET_KEY, an HMAC is as fast to attack as SHA-256).
# The cost: a replay that differs from the first request in the password alone gets the
# first answer instead of 422 (docs/security.md "Accounts and tokens").
SECRET_FIELDS = frozenset({"password", "password1", "password2", "old_password", "new_password"})
_FINGERPRINT_SALT = "tradesense.idempotency.fingerprint"


def _fingerprint_message(request, *, drop: frozenset = SECRET_FIELDS) -> str:
    data = request.data
    if isinstance(data, Mapping):
        data = {name: value for name, value in data.items() if name not in drop}
    try:
        body = json.dumps(data, sort_keys=True, default=str)
    except Exception:
        body = str(data)  # never the raw body: it holds what `drop` leaves out
    return f"{request.method} {request.path}\n{body}"


def _fingerprint(request, *, secret: str | None = None) -> str:
    """HMAC-SHA256 under SECRET_KEY of the method, path and body less SECRET_FIELDS: the
    stored value says nothing about the body to anyone without the key."""
    return salted_hmac(_FINGERPRINT_SALT, _fingerprint_message(request), secret=secret, algorithm="sha256").hexdigest()


def _earlier_fingerprints(request) -> Iterator[str]:
    """What a record written before a SECRET_KEY rotation (SECRET_KEY_FALLBACKS), or by
    the release before keyed fingerprints (plain SHA-256 of the whole body), holds for the
    same request, so a retry across the upgrade still replays. Only compared, never stored."""
    for secret in settings.SECRET_KEY_FALLBACKS:
        yield _fingerprint(request, secret=secret)
    yield hashlib.sha256(_fingerprint_message(request, drop=frozenset()).encode()).hexdigest()


def _scope(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return "anon"


def _claim(cursor, *, scope: str, key: str, fingerprint: str) -> int | None:
    """The new record's id, or None when the key is already recorded (committed)."""
    now = rawsql.db_value(IdempotencyRecord, "created_at", timezone.now())
    cursor.execute(_CLAIM_SQL, [scope, key, fingerprint, now])
    row = cursor.fetchone()
    return row[0] if row else None


def _replay(cursor, *, scope: str, key: str, fingerprint: str, earlier: Callable[[], Iterator[str]]) -> Response | None:
    cursor.execute(_READ_SQL, [scope, key])
    row = cursor.fetchone()
    if row is None:
        return None  # purged between the claim and this read: claim it again
    stored_fingerprint, status_code, body = row
    if not hmac.compare_digest(stored_fingerprint, fingerprint) and not any(
        hmac.compare_digest(stored_fingerprint, other) for other in earlier()
    ):
        raise IdempotencyKeyReused()
    body = _BODY_FIELD.from_db_value(body, None, connection)
    response = Response(body, status=status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(view_method):
    """Decorate an APIView.post so an Idempotency-Key makes it safe to retry."""

    @functools.wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(self, request, *args, **kwargs)
        if not (1 <= len(key) <= 255):
            raise InvalidInput(
                "Idempotency-Key must be 1 to 255 characters.",
                fields={HEADER: ["Must be 1 to 255 characters."]},
            )
        fingerprint = _fingerprint(request)
        scope = _scope(request)
        with transaction.atomic():
            with rawsql.cursor() as cursor:
                record_id = None
                for _attempt in range(2):
                    record_id = _claim(cursor, scope=scope, key=key, fingerprint=fingerprint)
                    if record_id is not None:
                        break
                    replayed = _replay(
                        cursor, scope=scope, key=key, fingerprint=fingerprint,
                        earlier=lambda: _earlier_fingerprints(request),
                    )
                    if replayed is not None:
                        return replayed
                if record_id is None:  # its record vanished twice between claim and read
                    raise StateConflict("This Idempotency-Key's record is changing; retry.", code="idempotency_retry")
            # The work runs in this transaction, which a failure rolls back whole (the
            # record with it): the view may skip a savepoint of its own.
            request.transaction_fails_whole = True
            response = view_method(self, request, *args, **kwargs)
            if response.status_code >= 400:
                transaction.set_rollback(True)
                return response
            body = json.loads(json.dumps(response.data, default=str))
            with rawsql.cursor() as cursor:
                cursor.execute(
                    _ANSWER_SQL, [response.status_code, _BODY_FIELD.get_db_prep_save(body, connection), record_id]
                )
            return response

    return wrapper
