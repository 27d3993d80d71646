"""Typed trading errors; tradesense.common.errors maps each to its status and JSON body."""

from __future__ import annotations

from tradesense.common.errors import (
    DependencyUnavailable,
    NotFound,
    RuleRefused,
    StaleVersion,
    StateConflict,
)


class ChallengeNotFound(NotFound):
    code = "not_found"
    message = "No such challenge."


class ChallengeNotActive(StateConflict):
    code = "challenge_not_active"
    message = "The challenge is not active: it no longer accepts orders."


class TransitionNotAllowed(StateConflict):
    code = "transition_not_allowed"


class UnknownSymbol(RuleRefused):
    code = "unknown_symbol"


class InvalidQuantity(RuleRefused):
    code = "invalid_qty"


class InsufficientMargin(RuleRefused):
    code = "insufficient_margin"


class ClientOrderIdReused(RuleRefused):
    code = "client_order_id_reused"
    message = "This client_order_id was already used for a different order on this challenge."


class NoPosition(NotFound):
    code = "not_found"
    message = "No open position in this symbol."


class StalePrice(DependencyUnavailable):
    code = "stale_price"
    retry_after = 2


class ChallengeStaleVersion(StaleVersion):
    """A write based on a version the challenge no longer has.

    Carries what was attempted so the boundary that caught it (API view, admin) can
    record a Conflict row after the failed transaction has rolled back.
    """

    def __init__(self, *, challenge_id: int, expected: int, actual: int, attempted_change: dict | None = None):
        super().__init__(
            f"The challenge is at version {actual}, not {expected}; re-read it and try again.",
            fields={"If-Match": [f"Stale version {expected}; current version is {actual}."]},
        )
        self.challenge_id = challenge_id
        self.expected = expected
        self.actual = actual
        self.attempted_change = attempted_change or {}
