"""Typed domain errors and the one place they become HTTP responses.

Every error body is {"error": {"code", "message", "fields"}} (API.md).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler

logger = logging.getLogger(__name__)


class DomainError(Exception):
    status_code = 400
    code = "invalid"
    message = "The request was refused."

    def __init__(self, message: str | None = None, *, fields: dict | None = None, code: str | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.fields = fields or {}
        if code:
            self.code = code


class InvalidInput(DomainError):
    status_code = 400
    code = "invalid"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"
    message = "Not found."


class StateConflict(DomainError):
    status_code = 409
    code = "conflict"


class StaleVersion(StateConflict):
    code = "stale_version"
    message = "The object changed since you read it; re-read it and try again."


class RuleRefused(DomainError):
    """A well-formed request refused by a business rule; `code` names the rule."""

    status_code = 422
    code = "refused"


class DependencyUnavailable(DomainError):
    status_code = 503
    code = "unavailable"
    retry_after = 5


class IdempotencyKeyReused(RuleRefused):
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request."


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten_fields(detail) -> dict:
    if isinstance(detail, dict):
        out = {}
        for name, problems in detail.items():
            if isinstance(problems, dict):
                for sub, subproblems in _flatten_fields(problems).items():
                    out[f"{name}.{sub}"] = subproblems
            elif isinstance(problems, list):
                out[name] = [str(p) for p in problems]
            else:
                out[name] = [str(problems)]
        return out
    if isinstance(detail, list):
        return {"non_field_errors": [str(p) for p in detail]}
    return {"non_field_errors": [str(detail)]}


_DRF_CODES = {
    drf.ParseError: ("malformed_json", 400),
    drf.NotAuthenticated: ("not_authenticated", 401),
    drf.AuthenticationFailed: ("authentication_failed", 401),
    drf.PermissionDenied: ("permission_denied", 403),
    drf.NotFound: ("not_found", 404),
    drf.MethodNotAllowed: ("method_not_allowed", 405),
    drf.NotAcceptable: ("not_acceptable", 406),
    drf.UnsupportedMediaType: ("unsupported_media_type", 415),
    drf.Throttled: ("throttled", 429),
}


def api_exception_handler(exc, context):
    if isinstance(exc, DomainError):
        response = Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
        if isinstance(exc, DependencyUnavailable):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "Not found."), status=404)
    if isinstance(exc, PermissionDenied):
        return Response(error_body("permission_denied", "You may not do this."), status=403)
    if isinstance(exc, drf.ValidationError):
        fields = _flatten_fields(exc.detail)
        names = ", ".join(sorted(fields)) or "request"
        return Response(error_body("invalid", f"Invalid input: {names}.", fields), status=400)
    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and "pool" in str(exc).lower()
    ):
        logger.warning("database unavailable: %s", exc)
        response = Response(
            error_body("database_unavailable", "The database is unavailable; retry shortly."), status=503
        )
        response["Retry-After"] = "2"
        return response
    for cls, (code, status) in _DRF_CODES.items():
        if isinstance(exc, cls):
            response = drf_default_handler(exc, context)
            message = str(exc.detail) if hasattr(exc, "detail") else str(exc)
            # A body that did not parse: name it (or the key at fault, parsers.MalformedJson)
            # as every other 400 names its field.
            fields = (getattr(exc, "fields", None) or {"body": [message]}) if isinstance(exc, drf.ParseError) else None
            out = Response(error_body(code, message, fields), status=status)
            if response is not None:
                for header in ("WWW-Authenticate", "Retry-After", "Allow"):
                    if header in response:
                        out[header] = response[header]
            return out
    if isinstance(exc, drf.APIException):
        return Response(error_body(exc.default_code, str(exc.detail)), status=exc.status_code)
    return None


# --- Errors raised before any API view: tradesense/urls.py handler400 and handler404 ------------

API_PREFIX = "/api/"


def bad_request(request, exception):
    """400 for what Django refuses itself (too many fields, a disallowed Host): the error
    body under /api/, Django's page elsewhere."""
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse(error_body("bad_request", "The request is malformed."), status=400)
    return defaults.bad_request(request, exception)


def page_not_found(request, exception):
    """404 for a path that matches no route (an id past bigint does not match <id:...>)."""
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)
