"""The circuit breaker: state in one database row, every move audited."""

from datetime import timedelta

import pytest
from django.utils import timezone

from payments import circuit, services
from payments.models import ProcessorCircuit
from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def policy(settings):
    settings.PAYMENT_CIRCUIT_FAILURE_THRESHOLD = 3
    settings.PAYMENT_CIRCUIT_COOLDOWN_SECONDS = 30


def row() -> ProcessorCircuit:
    return ProcessorCircuit.objects.get(name=circuit.NAME)


def test_closed_lets_calls_through_and_opens_after_the_threshold():
    now = timezone.now()
    assert circuit.circuit_permit(now=now) == circuit.CLOSED
    circuit.circuit_record_failure(error="refused", now=now)
    circuit.circuit_record_failure(error="refused", now=now)
    assert row().state == "closed" and circuit.circuit_permit(now=now) == circuit.CLOSED
    circuit.circuit_record_failure(error="refused", now=now)

    opened = row()
    assert opened.state == "open" and opened.retry_at == now + timedelta(seconds=30)
    assert circuit.circuit_permit(now=now + timedelta(seconds=29)) is None
    assert AuditEvent.objects.filter(action="processor_circuit.open").count() == 1


def test_a_success_in_between_resets_the_count():
    now = timezone.now()
    for _ in range(2):
        circuit.circuit_record_failure(error="x", now=now)
    circuit.circuit_record_success()
    for _ in range(2):
        circuit.circuit_record_failure(error="x", now=now)
    assert row().state == "closed"


def test_after_the_cooldown_exactly_one_probe_goes():
    now = timezone.now()
    for _ in range(3):
        circuit.circuit_record_failure(error="x", now=now)
    later = now + timedelta(seconds=31)
    assert circuit.circuit_permit(now=later) == circuit.PROBE
    assert row().state == "half_open"
    assert circuit.circuit_permit(now=later) is None  # one probe at a time
    assert circuit.circuit_permit(now=later + timedelta(seconds=1)) is None


def test_a_failed_probe_reopens_and_a_good_one_closes():
    now = timezone.now()
    for _ in range(3):
        circuit.circuit_record_failure(error="x", now=now)
    later = now + timedelta(seconds=31)
    circuit.circuit_permit(now=later)
    circuit.circuit_record_failure(error="still down", now=later)
    assert row().state == "open" and row().retry_at == later + timedelta(seconds=30)

    again = later + timedelta(seconds=31)
    assert circuit.circuit_permit(now=again) == circuit.PROBE
    circuit.circuit_record_success()
    assert row().state == "closed" and row().consecutive_failures == 0
    assert list(
        AuditEvent.objects.filter(object_type="payments.processorcircuit").order_by("id").values_list("action", flat=True)
    ) == ["processor_circuit.open", "processor_circuit.half_open", "processor_circuit.open",
          "processor_circuit.half_open", "processor_circuit.closed"]


def test_a_vanished_probe_is_taken_over_after_its_lease():
    now = timezone.now()
    for _ in range(3):
        circuit.circuit_record_failure(error="x", now=now)
    circuit.circuit_permit(now=now + timedelta(seconds=31))
    assert circuit.circuit_permit(now=now + timedelta(seconds=31 + 60)) == circuit.PROBE


def test_an_open_circuit_stops_the_sweep_from_calling(processor, trader, plans, settings):
    settings.PAYMENT_CIRCUIT_FAILURE_THRESHOLD = 3
    settings.PAYMENT_CIRCUIT_COOLDOWN_SECONDS = 30
    services.purchase_create(trader=trader, plan=plans["starter"], payment_method="card", payment_token="tok_visa")
    for _ in range(3):
        circuit.circuit_record_failure(error="x")
    report = services.payments_sweep()
    assert report.circuit_open and report.calls == 0
    assert processor.stats()["counters"].get("requests", 0) == 0


def test_operator_reset_closes_it_under_their_name(staff):
    for _ in range(3):
        circuit.circuit_record_failure(error="x")
    circuit.circuit_reset(actor=staff)
    assert row().state == "closed"
    event = AuditEvent.objects.filter(action="processor_circuit.closed").get()
    assert event.actor == staff and event.actor_label == f"staff:{staff.pk}"
