"""Payments fixtures (defined in tests/payments/fixtures.py so tests/failures can share them)."""

from tests.payments.fixtures import (  # noqa: F401
    fixture_captured_enqueues,
    fixture_fake_processor_proc,
    fixture_processor,
    fixture_webhook_receiver,
)
