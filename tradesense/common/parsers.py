"""JSON for the REST API that refuses, with a 400, what json.loads accepts but nothing
behind it can handle.

- Nesting: CPython's decoder recurses once per level and raised RecursionError (a 500)
  on a body of a few thousand `[`; no request of API.md nests beyond a few levels, so
  anything deeper than MAX_DEPTH is refused before a serializer walks it.
- Strings holding NUL or an unpaired surrogate (`"\\ud800"`): PostgreSQL cannot store
  the first and no encoder can write the second as UTF-8 (psycopg and sqlite3 raise).
- Bytes that are not valid in the request's charset, and NaN/Infinity (as DRF's parser).

The payments webhook reads its raw bytes (they are what is signed) and checks them with
the same json_loads_strict.
"""

from __future__ import annotations

import json
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_MAX_PATH = 120  # characters of a JSON path repeated in an error's `fields`


class MalformedJson(ParseError):
    """400 malformed_json; `fields` names the body or the key at fault (errors.py).

    A DRF ParseError rather than a DomainError: DRF imports the parser while
    tradesense.common.errors is still importing DRF."""

    def __init__(self, message: str, *, fields: dict[str, list[str]]):
        super().__init__(message)
        self.fields = fields


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _path(parent: str, key) -> str:
    part = str(key).encode("unicode_escape").decode("ascii")  # a NUL in a key stays readable
    path = f"{parent}.{part}" if parent else part
    return path[:_MAX_PATH]


def _too_deep(top: str) -> MalformedJson:
    problem = f"Nested deeper than {MAX_DEPTH} levels."
    return MalformedJson(f"The JSON nests deeper than {MAX_DEPTH} levels.", fields={top: [problem]})


def _check(value, *, field: str) -> None:
    """Walk the decoded value without recursion: depth, then every key and string.

    Too deep names the top-level key it is under (the field a client sent); a bad
    string names its full path ("items.0.symbol")."""
    stack = [(value, 0, "", field)]
    while stack:
        node, depth, path, top = stack.pop()
        if isinstance(node, dict):
            if depth >= MAX_DEPTH:
                raise _too_deep(top)
            for key, child in node.items():
                here = _path(path, key)
                if _UNSTORABLE.search(key):
                    raise MalformedJson("A JSON key holds a NUL or an unpaired surrogate character.",
                                        fields={here: ["Key holds a NUL or an unpaired surrogate character."]})
                stack.append((child, depth + 1, here, here if depth == 0 else top))
        elif isinstance(node, list):
            if depth >= MAX_DEPTH:
                raise _too_deep(top)
            stack.extend((child, depth + 1, _path(path, index), top) for index, child in enumerate(node))
        elif isinstance(node, str) and _UNSTORABLE.search(node):
            raise MalformedJson("A JSON string holds a NUL or an unpaired surrogate character.",
                                fields={path or field: ["Holds a NUL or an unpaired surrogate character."]})


def json_loads_strict(raw: bytes | str, *, encoding: str = "utf-8", field: str = "body"):
    """json.loads, with every refusal of the module docstring as a MalformedJson (400);
    `field` names the body in `fields` when the problem is not inside one of its keys."""
    try:
        text = raw.decode(encoding) if isinstance(raw, bytes) else raw
    except (LookupError, UnicodeError) as exc:
        raise MalformedJson(f"The body is not valid {encoding}: {exc}.", fields={field: [f"Not valid {encoding}."]}) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedJson(f"The JSON nests deeper than {MAX_DEPTH} levels.",
                            fields={field: [f"Nested deeper than {MAX_DEPTH} levels."]}) from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise MalformedJson(f"The body is not JSON: {exc}.", fields={field: ["Not JSON."]}) from None
    _check(value, field=field)
    return value


class StrictJSONParser(JSONParser):
    """DRF's JSONParser (same media type) on json_loads_strict."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        return json_loads_strict(stream.read(), encoding=encoding)
