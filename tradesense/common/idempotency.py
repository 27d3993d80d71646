"""Idempotency-Key for creating POSTs (API.md): a replay returns the first response.

The record is inserted in the same transaction as the work it guards. A concurrent
duplicate blocks on the unique index until the first commits, then replays its
answer; a request that fails (4xx) rolls back, record included, so it can be retried.
"""

from __future__ import annotations

import functools
import hashlib
import json

from django.db import IntegrityError, transaction
from rest_framework.response import Response

from tradesense.common.errors import IdempotencyKeyReused, InvalidInput
from tradesense.common.models import IdempotencyRecord

HEADER = "Idempotency-Key"


def _fingerprint(request) -> str:
    try:
        body = json.dumps(request.data, sort_keys=True, default=str)
    except Exception:
        body = request.body.decode("utf-8", "replace") if hasattr(request, "body") else ""
    raw = f"{request.method} {request.path}\n{body}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _scope(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return "anon"


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
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(scope=scope, key=key, fingerprint=fingerprint)
            except IntegrityError:
                record = IdempotencyRecord.objects.get(scope=scope, key=key)
                if record.fingerprint != fingerprint:
                    raise IdempotencyKeyReused() from None
                response = Response(record.response_body, status=record.status_code)
                response["Idempotent-Replayed"] = "true"
                return response
            response = view_method(self, request, *args, **kwargs)
            if response.status_code >= 400:
                transaction.set_rollback(True)
                return response
            record.status_code = response.status_code
            record.response_body = json.loads(json.dumps(response.data, default=str))
            record.save(update_fields=["status_code", "response_body"])
            return response

    return wrapper
