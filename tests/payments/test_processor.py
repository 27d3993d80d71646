"""The HTTP processor client against the running fake processor, fault mode by fault mode."""

import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from payments.processor import HttpPaymentProcessor, ProcessorRejected, ProcessorUnavailable, get_processor
from tests.payments.fixtures import SECRET, ProcessorAdmin, start_fake_processor


def charge(client, key=None, *, amount=Decimal("200.00"), token="tok_visa"):
    return client.charge(idempotency_key=key or str(uuid.uuid4()), amount=amount, currency="MAD",
                         payment_method="card", token=token, description="test")


@pytest.fixture
def client(processor):
    return get_processor()


def test_tok_visa_is_charged_once_per_key(client, processor):
    key = str(uuid.uuid4())
    first = charge(client, key)
    again = charge(client, key)

    assert first.succeeded and first.amount == Decimal("200.00") and first.currency == "MAD"
    assert first.idempotency_key == key
    assert again == first  # the first result, not a second charge
    assert processor.charge_count() == 1
    assert processor.stats()["counters"]["replays"] == 1
    assert client.charge_lookup(idempotency_key=key) == first


def test_tok_decline_is_declined(client, processor):
    result = charge(client, token="tok_decline")
    assert result.status == "declined" and result.decline_code == "card_declined"
    assert result.message == "Your card was declined."
    assert processor.charge_count() == 0


def test_decline_fault_declines_even_tok_visa(client, processor):
    processor.faults(decline=True)
    assert charge(client).status == "declined"
    processor.faults(decline=False)
    assert charge(client).succeeded


def test_same_key_other_amount_is_rejected_not_charged(client, processor):
    key = str(uuid.uuid4())
    charge(client, key)
    with pytest.raises(ProcessorRejected) as info:
        charge(client, key, amount=Decimal("201.00"))
    assert info.value.http_status == 409
    assert processor.charge_count() == 1


def test_unknown_key_lookup_is_none(client, processor):
    assert client.charge_lookup(idempotency_key=str(uuid.uuid4())) is None


def test_down_is_transient_and_charges_nothing(client, processor):
    processor.faults(down=True)
    with pytest.raises(ProcessorUnavailable):
        charge(client)
    assert processor.charge_count() == 0


def test_500s_are_transient_and_charge_nothing(client, processor):
    processor.faults(error_500=True)
    with pytest.raises(ProcessorUnavailable) as info:
        charge(client)
    assert info.value.http_status == 500 and info.value.may_have_charged
    assert processor.charge_count() == 0


def test_slow_times_out_and_the_retry_gets_the_first_result(client, processor, settings):
    settings.PAYMENT_PROCESSOR_TIMEOUT_SECONDS = 0.3
    processor.faults(slow_seconds=0.8)
    key = str(uuid.uuid4())
    with pytest.raises(ProcessorUnavailable) as info:
        charge(get_processor(), key)
    assert info.value.may_have_charged  # a timeout says nothing about the money
    processor.faults(slow_seconds=0)
    settings.PAYMENT_PROCESSOR_TIMEOUT_SECONDS = 2.0
    retried = charge(get_processor(), key)
    assert retried.succeeded
    assert processor.charge_count() == 1


def test_charge_then_drop_charges_and_the_retry_does_not_charge_again(client, processor):
    processor.faults(drop_after_charge=True)
    key = str(uuid.uuid4())
    with pytest.raises(ProcessorUnavailable) as info:
        charge(client, key)
    assert info.value.may_have_charged
    assert processor.charge_count() == 1  # the money moved though the client never heard
    processor.faults(drop_after_charge=False)
    retried = charge(client, key)
    assert retried.succeeded
    assert processor.charge_count() == 1


def test_wrong_secret_is_transient_not_a_verdict(processor):
    bad = HttpPaymentProcessor(base_url=processor.base_url, secret="wrong", timeout=2)
    with pytest.raises(ProcessorUnavailable) as info:
        charge(bad)
    assert info.value.http_status == 401 and not info.value.may_have_charged


def test_refund_is_idempotent(client, processor):
    paid = charge(client)
    refund = client.refund(charge_id=paid.id, idempotency_key="refund-1")
    again = client.refund(charge_id=paid.id, idempotency_key="refund-1")
    assert refund == again and refund.amount == Decimal("200.00") and refund.status == "succeeded"
    assert processor.stats()["counters"]["refunds"] == 1
    with pytest.raises(ProcessorRejected):
        client.refund(charge_id=paid.id, idempotency_key="refund-2")  # nothing left to refund


def test_a_stopped_processor_refuses_and_a_restarted_one_remembers_its_charges():
    """Down for real (process gone: connection refused), then back with its SQLite state:
    a retry of a key it charged before the crash is answered, not charged again."""
    port = 18102
    state = str(Path(tempfile.mkdtemp(prefix="ts-fp-")) / "processor.sqlite3")
    client = HttpPaymentProcessor(base_url=f"http://127.0.0.1:{port}", secret=SECRET, timeout=2)
    proc = start_fake_processor(port, state=state)
    try:
        key = str(uuid.uuid4())
        first = charge(client, key)
        proc.kill()
        with pytest.raises(ProcessorUnavailable) as info:
            charge(client, key)
        assert not info.value.may_have_charged  # refused: provably never reached it
        proc = start_fake_processor(port, state=state)
        assert charge(client, key) == first
        assert ProcessorAdmin(f"http://127.0.0.1:{port}").charge_count() == 1
    finally:
        proc.stop()
