"""Input no view can store or decode, handled before any view, session or
authentication reads it.

- A NUL character (\\x00) in the path, the query string, a header (cookies included) or
  a string of a form or JSON body is a 400 with API.md's error body naming where it was
  found. PostgreSQL text cannot hold one: psycopg refuses the query, so one NUL in a
  session cookie, a token, a search box or a login form was a 500 in whichever code read
  it first (the session middleware, token authentication, the admin's search, the login
  form's user lookup). JSON bodies are checked on their bytes: a NUL is an escape
  (`\\u0000`) that counts only when its backslash is not itself escaped. Nesting depth and
  lone surrogates need the parsed value: the JSON parser refuses them
  (tradesense.common.parsers).
- Content-Type parameters Django cannot use are dropped, the media type kept, before the
  request object is built: a charset Python knows that decodes no text (`rot13`, `zlib`)
  and an RFC 2231 parameter naming an unknown encoding (`charset*=bogus''x`). Django
  raises while it builds the request, before any middleware runs, so the server
  answered 500: WSGIRequest on both (LookupError, ValueError), ASGIRequest on the second. Dropped, the body is read as UTF-8, as
  Django already does for a charset it does not know. The only hook Django runs that
  early on every server (WSGI, ASGI, the test client) is the request_started signal;
  the middleware connects the receiver when it is installed.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import RequestDataTooBig
from django.core.signals import request_started
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.http import parse_header_parameters

from tradesense.common.errors import error_body

# An unescaped `\u0000` in JSON text: preceded by an even number of backslashes.
_JSON_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NUL_PROBLEM = "Contains a NUL character (\\x00)."
# Bytes a query string or form may hold, to try a charset on (_charset_unusable).
_CHARSET_PROBES = (b"a=1&b", b"a=\xff\xfe", b"\x80\x81=%ff", b"+\xe9", b"\x00\x01")
# Header-like META keys that are not HTTP_*.
_META_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")


def _refusal(code: str, message: str, field: str, problem: str) -> JsonResponse:
    return JsonResponse(error_body(code, message, {field: [problem]}), status=400)


def _nul_refusal(where: str) -> JsonResponse:
    return _refusal("nul_character", f"The request carries a NUL character in {where}.", where, _NUL_PROBLEM)


@lru_cache(maxsize=64)
def _charset_unusable(charset: str) -> bool:
    """True for a charset Python knows that cannot decode text (see module docstring)."""
    try:
        codecs.lookup(charset)
    except LookupError:
        return False  # unknown: Django keeps its default charset
    try:
        "a".encode(charset)
        for sample in _CHARSET_PROBES:
            # What Django does with it: strict first (a UnicodeDecodeError is caught
            # there), then urllib's unquote with errors="replace".
            try:
                sample.decode(charset)
            except UnicodeDecodeError:
                pass
            sample.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):  # UnicodeError is a ValueError
        return True
    return False


def usable_content_type(value: str) -> str | None:
    """The Content-Type to build the request from instead of `value`, or None to keep it."""
    if ";" not in value:
        return None  # no parameters: nothing Django could fail on
    try:
        _media, params = parse_header_parameters(value)
    except Exception:  # noqa: BLE001 - whatever Django's parse raises is what would 500
        return value.split(";", 1)[0].strip()
    charset = params.get("charset")
    if charset and _charset_unusable(charset):
        return value.split(";", 1)[0].strip()
    return None


def _content_type_before_request(sender, environ=None, scope=None, **kwargs):
    """request_started receiver: rewrite an unusable Content-Type in the WSGI environ or
    the ASGI scope that the request is about to be built from."""
    if environ is not None:
        replacement = usable_content_type(environ.get("CONTENT_TYPE", ""))
        if replacement is not None:
            environ["CONTENT_TYPE"] = replacement
    elif scope is not None and scope.get("type") == "http":
        headers = list(scope.get("headers") or ())
        for index, (name, value) in enumerate(headers):
            if name.lower() == b"content-type":
                replacement = usable_content_type(value.decode("latin-1"))
                if replacement is not None:
                    headers[index] = (name, replacement.encode("latin-1"))
                    scope["headers"] = headers


def _header_name(meta_key: str) -> str:
    name = meta_key[5:] if meta_key.startswith("HTTP_") else meta_key
    return "-".join(part.capitalize() for part in name.split("_"))


def _form_strings(request):
    """Every name and value of a multipart form, file names included."""
    for name, values in request.POST.lists():
        yield name
        yield from values
    for name, files in request.FILES.lists():
        yield name
        yield from (upload.name or "" for upload in files)


def input_refusal(request) -> JsonResponse | None:
    """The 400 this request gets, or None when it may go on."""
    if "\x00" in request.path:
        return _nul_refusal("path")
    query = request.META.get("QUERY_STRING", "")
    # Percent-decoding is one pass, so only `%00` (or a raw NUL) decodes to NUL.
    if "\x00" in query or "%00" in query:
        return _nul_refusal("query")
    for key, value in request.META.items():
        if (key.startswith("HTTP_") or key in _META_HEADERS) and isinstance(value, str) and "\x00" in value:
            return _nul_refusal(_header_name(key))

    content_type = request.content_type or ""
    try:
        # Read (and kept) before anything parses it: the webhook needs the raw bytes after
        # request.POST was parsed from them. Bounded by DATA_UPLOAD_MAX_MEMORY_SIZE, files
        # included: nothing here takes an upload.
        body = request.body
        if content_type == "multipart/form-data":
            if any("\x00" in text for text in _form_strings(request)):
                return _nul_refusal("body")
            return None
    except RequestDataTooBig:
        return _refusal("body_too_large", "The request body is too large.", "body", "Too large.")
    except MultiPartParserError:
        return _refusal("malformed_body", "The multipart body is malformed.", "body", "Malformed multipart body.")
    if not body:
        return None
    if b"\x00" in body:
        return _nul_refusal("body")
    if content_type == "application/x-www-form-urlencoded" and b"%00" in body:
        return _nul_refusal("body")
    if (content_type == "application/json" or content_type.endswith("+json")) and _JSON_NUL_ESCAPE.search(body):
        return _nul_refusal("body")
    return None


class RefuseUnstorableInputMiddleware:
    """See the module docstring. Sync and async, so an ASGI server pays no thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        # Handlers build the middleware chain before their first request_started.
        request_started.connect(_content_type_before_request, dispatch_uid="tradesense.content_type_before_request")
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return input_refusal(request) or self.get_response(request)

    async def __acall__(self, request):
        # The ASGI handler has already received the whole body: reading it blocks nothing.
        return input_refusal(request) or await self.get_response(request)
