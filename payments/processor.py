"""The payment processor as the rest of payments sees it: an interface and its HTTP client.

Every charge carries the purchase's idempotency key, so a retry after any transient
failure (even one where the processor charged and the answer was lost) can never charge
twice: the processor returns the first result for a key it has seen.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Protocol

import httpx
from django.conf import settings


@dataclass(frozen=True)
class Charge:
    id: str
    idempotency_key: str
    status: str  # "succeeded" | "declined"
    amount: Decimal
    currency: str
    decline_code: str = ""
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class Refund:
    id: str
    charge_id: str
    amount: Decimal
    status: str


class ProcessorError(Exception):
    pass


class ProcessorUnavailable(ProcessorError):
    """Transient: timeout, connection refused or dropped, 5xx, 429. Retry with the same key.

    `may_have_charged` is False only when the request provably never reached the
    processor (the connection was refused), True when the outcome is unknown.
    """

    def __init__(self, message: str, *, may_have_charged: bool, http_status: int | None = None):
        super().__init__(message)
        self.may_have_charged = may_have_charged
        self.http_status = http_status


class ProcessorRejected(ProcessorError):
    """Permanent: the processor refused the request itself (400, 409, 422...).

    Not a decline: retrying the same request will not help, and nothing says whether
    money moved under this key, so the purchase goes to an operator via reconciliation.
    """

    def __init__(self, message: str, *, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class PaymentProcessor(Protocol):
    def charge(
        self, *, idempotency_key: str, amount: Decimal, currency: str, payment_method: str, token: str, description: str
    ) -> Charge: ...

    def charge_lookup(self, *, idempotency_key: str) -> Charge | None: ...

    def refund(self, *, charge_id: str, idempotency_key: str, amount: Decimal | None = None) -> Refund: ...


def _decimal(value, field: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        raise ProcessorUnavailable(f"unreadable {field} in the processor's answer", may_have_charged=True) from None


def _charge_from(data: dict) -> Charge:
    try:
        return Charge(
            id=str(data["id"]),
            idempotency_key=str(data["idempotency_key"]),
            status=str(data["status"]),
            amount=_decimal(data["amount"], "amount"),
            currency=str(data["currency"]),
            decline_code=str(data.get("decline_code") or ""),
            message=str(data.get("message") or ""),
        )
    except (KeyError, TypeError):
        # A garbled success page: we cannot tell whether money moved.
        raise ProcessorUnavailable("unreadable charge in the processor's answer", may_have_charged=True) from None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~60 ms: do it once per process, not once per call.
    return httpx.create_ssl_context()


class HttpPaymentProcessor:
    """The processor's REST API over HTTP with a hard timeout on every call."""

    def __init__(self, *, base_url: str, secret: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.timeout = timeout

    def _request(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None,
                 idempotency_key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secret}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            # A fresh client per call: calls come from several worker threads, and a
            # pooled keep-alive connection to a processor that just restarted would
            # turn a clean "refused" into an ambiguous "dropped".
            with httpx.Client(timeout=httpx.Timeout(self.timeout), verify=_tls_context()) as client:
                response = client.request(method, self.base_url + path, json=json, params=params, headers=headers)
        except httpx.ConnectError as exc:
            raise ProcessorUnavailable(f"connection refused: {exc}", may_have_charged=False) from None
        except httpx.ConnectTimeout as exc:
            raise ProcessorUnavailable(f"connect timeout: {exc}", may_have_charged=False) from None
        except httpx.TimeoutException as exc:
            raise ProcessorUnavailable(f"timeout after {self.timeout}s: {type(exc).__name__}", may_have_charged=True) from None
        except httpx.HTTPError as exc:
            # Dropped connection, reset, protocol error: the request may have been acted on.
            raise ProcessorUnavailable(f"connection lost: {type(exc).__name__}: {exc}", may_have_charged=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ProcessorUnavailable(
                f"processor answered HTTP {response.status_code}", may_have_charged=True, http_status=response.status_code
            )
        if response.status_code in (401, 403):
            # Our credentials are wrong: a configuration problem, not a verdict on the
            # payment. Treated as transient so the purchase waits (and the breaker opens)
            # instead of failing a trader for our mistake.
            raise ProcessorUnavailable(
                f"processor refused our credentials (HTTP {response.status_code})",
                may_have_charged=False,
                http_status=response.status_code,
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            raise ProcessorUnavailable(
                f"unreadable answer (HTTP {response.status_code})", may_have_charged=True, http_status=response.status_code
            ) from None
        if not isinstance(data, dict):
            raise ProcessorUnavailable("unreadable answer", may_have_charged=True, http_status=response.status_code)
        return data

    def charge(
        self, *, idempotency_key: str, amount: Decimal, currency: str, payment_method: str, token: str, description: str
    ) -> Charge:
        body = {
            "amount": str(amount),
            "currency": currency,
            "payment_method": payment_method,
            "token": token,
            "description": description,
        }
        response = self._request("POST", "/v1/charges", json=body, idempotency_key=idempotency_key)
        data = self._json(response)
        if response.status_code in (200, 201):
            return _charge_from(data)
        if response.status_code == 402 and data.get("status") == "declined":
            return _charge_from(data)
        error = data.get("error") or {}
        raise ProcessorRejected(
            f"processor refused the request (HTTP {response.status_code}): {error.get('code', '')} {error.get('message', '')}".strip(),
            http_status=response.status_code,
        )

    def charge_lookup(self, *, idempotency_key: str) -> Charge | None:
        response = self._request("GET", "/v1/charges", params={"idempotency_key": idempotency_key})
        if response.status_code == 404:
            return None
        data = self._json(response)
        if response.status_code == 200:
            return _charge_from(data)
        raise ProcessorRejected(f"lookup refused (HTTP {response.status_code})", http_status=response.status_code)

    def refund(self, *, charge_id: str, idempotency_key: str, amount: Decimal | None = None) -> Refund:
        body = {} if amount is None else {"amount": str(amount)}
        response = self._request("POST", f"/v1/charges/{charge_id}/refunds", json=body, idempotency_key=idempotency_key)
        data = self._json(response)
        if response.status_code in (200, 201):
            return Refund(
                id=str(data["id"]),
                charge_id=str(data["charge"]),
                amount=_decimal(data["amount"], "amount"),
                status=str(data["status"]),
            )
        raise ProcessorRejected(f"refund refused (HTTP {response.status_code})", http_status=response.status_code)


def get_processor() -> PaymentProcessor:
    """The configured processor (settings are read per call so tests can point elsewhere)."""
    return HttpPaymentProcessor(
        base_url=settings.PAYMENT_PROCESSOR_URL,
        secret=settings.PAYMENT_PROCESSOR_SECRET,
        timeout=settings.PAYMENT_PROCESSOR_TIMEOUT_SECONDS,
    )
