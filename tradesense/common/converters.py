"""`<id:...>`: the path converter for database ids.

Django's `<int:...>` matches any run of digits, so `/challenges/<30 digits>` reached the
views, and a raw statement handed the number to PostgreSQL, which refused it (a 500).
This one matches 1 to 19 ASCII digits and refuses a value past bigint: the URL then
does not match and the answer is the same 404 as for any unknown object, before any
view or query runs.

Importing this module registers the converter; every URL conf that uses `<id:...>`
imports it, so the registration never depends on which conf is loaded first.
"""

from __future__ import annotations

from django.urls import register_converter

from tradesense.common.parsing import BIGINT_DIGITS, BIGINT_MAX


class IdConverter:
    regex = f"[0-9]{{1,{BIGINT_DIGITS}}}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > BIGINT_MAX:
            raise ValueError("past bigint")  # Django: this pattern does not match
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))


register_converter(IdConverter, "id")
