"""Webhook signatures: `X-Signature: t=<unix>,v1=<hex>` (API.md).

v1 is HMAC-SHA256 under the shared secret of `"<t>." + raw body` (the scheme Stripe
uses): signing the timestamp with the body is what makes the tolerance window mean
something, since an attacker cannot re-date a captured delivery.

No Django here: the fake processor (its own process) signs with the same code that
the webhook endpoint verifies with.
"""

from __future__ import annotations

import hashlib
import hmac


class SignatureError(ValueError):
    """The header is missing, malformed, stale, or does not match the body."""


def compute_signature(*, secret: str, body: bytes, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={compute_signature(secret=secret, body=body, timestamp=timestamp)}"


def verify_signature(*, secret: str, body: bytes, header: str | None, now: float, tolerance: float) -> int:
    """Return the signed timestamp, or raise SignatureError saying what is wrong.

    Several v1 values are accepted (one per secret during a rotation); one must match.
    """
    if not header:
        raise SignatureError("The X-Signature header is missing.")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("The X-Signature header is malformed; expected t=<unix>,v1=<hex>.")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("The X-Signature timestamp is not an integer.") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("The X-Signature header is malformed; expected t=<unix>,v1=<hex>.")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("The X-Signature timestamp is outside the tolerance window.")
    expected = compute_signature(secret=secret, body=body, timestamp=timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("The X-Signature does not match the body.")
    return timestamp
