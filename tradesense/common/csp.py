"""The Content-Security-Policy header: settings.CONTENT_SECURITY_POLICY plus the WebSocket
origin of the page's own host in connect-src.

The dashboard opens `ws(s)://<location.host>/ws/v1/stream`. CSP Level 3 lets 'self' match
that, but browsers that predate it (Safari before 15.4) do not, and the host a deployment
is reached at is only known per request (ALLOWED_HOSTS may hold several), so the origin is
added from the request rather than listed in the settings.
"""

from __future__ import annotations

from csp.middleware import CSPMiddleware as BaseCSPMiddleware
from csp.middleware import PolicyParts
from django.core.exceptions import DisallowedHost


def websocket_origin(request) -> str | None:
    """`wss://host:port` (`ws://` over plain HTTP) for the host this request was made to."""
    try:
        host = request.get_host()
    except DisallowedHost:
        return None  # the response is already a 400; it needs no WebSocket
    if not host or host.startswith("["):
        return None  # a CSP host-source cannot spell an IPv6 literal; 'self' covers it
    return f"{'wss' if request.is_secure() else 'ws'}://{host}"


class CSPMiddleware(BaseCSPMiddleware):
    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        origin = websocket_origin(request)
        if origin:
            parts.update = {**(parts.update or {})}
            parts.update["connect-src"] = [*parts.update.get("connect-src", ()), origin]
        return parts
