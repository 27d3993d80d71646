"""Strict parsing of what a path, a query string or a header carries: numbers, ids,
cursors, limits, versions, dates, choices and short texts.

Why not `int()` and `str.isdigit()`: isdigit() is true for '²' (which int() refuses,
a 500) and for Arabic-Indic or fullwidth digits (which int() quietly converts), and
int() takes any length, so an id past PostgreSQL's bigint reached the database and
failed there. Here a number is ASCII digits only (`[0-9]{1,N}`), of bounded length,
inside a declared range, and a bad value raises InvalidParameter: a 400 with API.md's
error body naming the parameter in `fields` (tradesense.common.errors maps it).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime

from django.utils.dateparse import parse_date, parse_datetime

from tradesense.common.errors import InvalidInput

# PostgreSQL's bigint, the type of every primary key here (BigAutoField).
BIGINT_MAX = 2**63 - 1
BIGINT_DIGITS = len(str(BIGINT_MAX))  # 19
# PositiveIntegerField (a challenge's version) is a PostgreSQL integer.
INTEGER_MAX = 2**31 - 1

_DIGITS = {n: re.compile(f"[0-9]{{1,{n}}}") for n in range(1, BIGINT_DIGITS + 1)}
# ISO 8601 in ASCII only: a date, or a date and time with an optional offset or Z.
_ISO_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)


class InvalidParameter(InvalidInput):
    """A path, query or header value that is not what it must be (400, `fields` names it)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}", fields={name: [problem]})


def parse_int(raw: str, *, name: str, minimum: int = 0, maximum: int = BIGINT_MAX) -> int:
    """ASCII digits only, as many as `maximum` has, within [minimum, maximum]."""
    digits = len(str(maximum))
    if not isinstance(raw, str) or _DIGITS[min(digits, BIGINT_DIGITS)].fullmatch(raw) is None:
        raise InvalidParameter(name, f"Must be a whole number written with 1 to {digits} digits 0-9.")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise InvalidParameter(name, f"Must be between {minimum} and {maximum}.")
    return value


def parse_id(raw: str, *, name: str) -> int:
    """A database id or an id cursor (`before`): 1 to PostgreSQL's bigint maximum."""
    return parse_int(raw, name=name, minimum=1, maximum=BIGINT_MAX)


def parse_optional_id(raw: str | None, *, name: str) -> int | None:
    return None if raw is None else parse_id(raw, name=name)


def parse_limit(raw: str | None, *, default: int, cap: int, name: str = "limit") -> int:
    """A page size: positive; larger than `cap` is answered with `cap` rows (API.md)."""
    if raw is None:
        return default
    return min(parse_int(raw, name=name, minimum=1), cap)


def parse_version_header(raw: str | None, *, name: str = "If-Match") -> int | None:
    """The challenge version an ETag header names: `"3"`, `W/"3"` or `3`; None when the
    header is absent or `*` (any version)."""
    if raw is None:
        return None
    text = raw.strip()
    if text == "*":
        return None
    if text.startswith("W/"):
        text = text[2:]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    try:
        # 0 is well-formed: a version the challenge never had, so the write is 409 stale.
        return parse_int(text, name=name, minimum=0, maximum=INTEGER_MAX)
    except InvalidParameter:
        raise InvalidParameter(name, 'Must be a challenge version in quotes, e.g. "3".') from None


def parse_choice(raw: str | None, *, name: str, choices: Collection[str]) -> str | None:
    if raw is None:
        return None
    if raw not in choices:
        raise InvalidParameter(name, f"Must be one of {', '.join(sorted(choices))}.")
    return raw


def parse_text(raw: str | None, *, name: str, max_length: int) -> str | None:
    """A short free text (a symbol filter): bounded, so it cannot grow a query."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= max_length:
        raise InvalidParameter(name, f"Must be 1 to {max_length} characters.")
    return raw


def parse_instant(raw: str | None, *, name: str) -> datetime | None:
    """An ISO 8601 date or date-time (`after`, `until`) as an aware UTC datetime.

    A date alone is midnight UTC; a time without an offset is UTC (API.md: timestamps
    are UTC). ASCII digits only, and the year must survive the shift to UTC."""
    if raw is None:
        return None
    problem = "Must be an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z."
    if len(raw) > 35 or _ISO_INSTANT.fullmatch(raw) is None:
        raise InvalidParameter(name, problem)
    try:
        value = parse_datetime(raw) if len(raw) > 10 else None
        if value is None:
            day = parse_date(raw)
            if day is None:
                raise ValueError(raw)
            value = datetime(day.year, day.month, day.day)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        # 2026-02-30, hour 25, or 0001-01-01 shifted before year 1 by its offset.
        raise InvalidParameter(name, problem) from None

