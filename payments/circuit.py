"""The circuit breaker in front of the processor, kept in one database row.

CLOSED: calls go through; `threshold` consecutive transient failures open it.
OPEN: no calls until `retry_at` (now + cool-down); then one probe may go.
HALF_OPEN: exactly one probe is in flight (leased until `probe_until`, so a worker that
dies mid-probe does not wedge it); its success closes the circuit, its failure re-opens.

Why the database and not the cache: every worker process must agree, the state must
survive a restart, and a Redis outage must neither break nor silently reset it. The
cost is one indexed single-row read per call while closed, and a row lock only when
the state changes.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments.models import ProcessorCircuit
from tradesense.common.audit import audit_record

NAME = "processor"
ACTOR = "system:payments-circuit"

CLOSED = "closed"
PROBE = "probe"


def _threshold() -> int:
    return int(getattr(settings, "PAYMENT_CIRCUIT_FAILURE_THRESHOLD", 5))


def _cooldown() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "PAYMENT_CIRCUIT_COOLDOWN_SECONDS", 30.0)))


def _probe_lease() -> timedelta:
    # Longer than any single call can take, so a live probe is never doubled.
    return timedelta(seconds=2 * float(settings.PAYMENT_PROCESSOR_TIMEOUT_SECONDS) + 5)


def _snapshot(circuit: ProcessorCircuit) -> dict:
    return {
        "state": circuit.state,
        "consecutive_failures": circuit.consecutive_failures,
        "retry_at": circuit.retry_at,
    }


def _locked() -> ProcessorCircuit:
    ProcessorCircuit.objects.get_or_create(name=NAME)
    return ProcessorCircuit.objects.select_for_update().get(name=NAME)


def circuit_get() -> ProcessorCircuit:
    circuit, _ = ProcessorCircuit.objects.get_or_create(name=NAME)
    return circuit


def _move(circuit: ProcessorCircuit, state: str, *, reason: str, **changes) -> None:
    before = _snapshot(circuit)
    circuit.state = state
    for name, value in changes.items():
        setattr(circuit, name, value)
    circuit.save()
    audit_record(
        action=f"processor_circuit.{state}", obj=circuit, actor_label=ACTOR, before=before, after=_snapshot(circuit),
        reason=reason,
    )


def circuit_permit(*, now=None) -> str | None:
    """May the caller call the processor now? CLOSED: yes; PROBE: yes, as the one
    half-open probe (report its outcome); None: no, the circuit is open."""
    now = now or timezone.now()
    circuit = circuit_get()
    if circuit.state == ProcessorCircuit.State.CLOSED:
        return CLOSED
    if circuit.state == ProcessorCircuit.State.OPEN and circuit.retry_at and circuit.retry_at > now:
        return None
    if circuit.state == ProcessorCircuit.State.HALF_OPEN and circuit.probe_until and circuit.probe_until > now:
        return None
    with transaction.atomic():
        circuit = _locked()
        if circuit.state == ProcessorCircuit.State.CLOSED:
            return CLOSED
        if circuit.state == ProcessorCircuit.State.OPEN:
            if circuit.retry_at and circuit.retry_at > now:
                return None
            _move(circuit, ProcessorCircuit.State.HALF_OPEN, reason="cool-down over: letting one probe through",
                  probe_until=now + _probe_lease())
            return PROBE
        if circuit.probe_until and circuit.probe_until > now:
            return None
        # The previous probe's holder vanished without reporting: take over the probe.
        circuit.probe_until = now + _probe_lease()
        circuit.save(update_fields=["probe_until", "updated_at"])
        return PROBE


def circuit_release_probe() -> None:
    """The probe holder found nothing to send: let the next caller with work probe."""
    with transaction.atomic():
        circuit = _locked()
        if circuit.state == ProcessorCircuit.State.HALF_OPEN:
            circuit.probe_until = None
            circuit.save(update_fields=["probe_until", "updated_at"])


def circuit_record_success() -> None:
    circuit = circuit_get()
    if circuit.state == ProcessorCircuit.State.CLOSED and circuit.consecutive_failures == 0:
        return  # the common case costs no lock and no write
    with transaction.atomic():
        circuit = _locked()
        if circuit.state != ProcessorCircuit.State.CLOSED:
            _move(circuit, ProcessorCircuit.State.CLOSED, reason="the processor answered again",
                  consecutive_failures=0, retry_at=None, probe_until=None, last_error="")
        elif circuit.consecutive_failures:
            circuit.consecutive_failures = 0
            circuit.save(update_fields=["consecutive_failures", "updated_at"])


def circuit_record_failure(*, error: str, now=None) -> None:
    now = now or timezone.now()
    with transaction.atomic():
        circuit = _locked()
        failures = circuit.consecutive_failures + 1
        if circuit.state == ProcessorCircuit.State.HALF_OPEN:
            _move(circuit, ProcessorCircuit.State.OPEN, reason=f"probe failed: {error}", consecutive_failures=failures,
                  opened_at=now, retry_at=now + _cooldown(), probe_until=None, last_error=error)
        elif circuit.state == ProcessorCircuit.State.CLOSED and failures >= _threshold():
            _move(circuit, ProcessorCircuit.State.OPEN, reason=f"{failures} consecutive failures; last: {error}",
                  consecutive_failures=failures, opened_at=now, retry_at=now + _cooldown(), last_error=error)
        else:
            # Still closed below the threshold, or a straggler failing while already open.
            circuit.consecutive_failures = failures
            circuit.last_error = error
            circuit.save(update_fields=["consecutive_failures", "last_error", "updated_at"])


def circuit_reset(*, actor) -> ProcessorCircuit:
    """Operator action: close the circuit now (audited under the operator's name)."""
    with transaction.atomic():
        circuit = _locked()
        if circuit.state != ProcessorCircuit.State.CLOSED or circuit.consecutive_failures:
            before = _snapshot(circuit)
            circuit.state = ProcessorCircuit.State.CLOSED
            circuit.consecutive_failures = 0
            circuit.retry_at = None
            circuit.probe_until = None
            circuit.save()
            audit_record(action="processor_circuit.closed", obj=circuit, actor=actor, before=before,
                         after=_snapshot(circuit), reason="reset by an operator")
        return circuit
