"""The client's address, as our own proxy saw it: never what the client says.

nginx (ops/stack.py render_nginx) replaces X-Forwarded-For with the address that
connected to it. A request that reached us from one of TRUSTED_PROXIES therefore carries
the real client in that header; a request from anywhere else is its own client, and
whatever X-Forwarded-For it sent is ignored. With several proxies in a chain, the
rightmost address that is not a trusted proxy is the client (the left part of the
header is the client's own claim).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=32)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [::1]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # 1.2.3.4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def is_trusted_proxy(address: str, trusted: Sequence[str] | None = None) -> bool:
    parsed = _parse(address)
    networks = _networks(tuple(settings.TRUSTED_PROXIES if trusted is None else trusted))
    return parsed is not None and any(parsed in net for net in networks)


def client_address(meta: Mapping[str, str], trusted: Sequence[str] | None = None) -> str:
    """The client's address for a request's META (WSGI environ or ASGI scope headers mapped alike)."""
    remote = (meta.get("REMOTE_ADDR") or "").strip()
    if not is_trusted_proxy(remote, trusted):
        return remote
    hops = [h.strip() for h in (meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if _parse(hop) is None:
            return remote  # a malformed header from our own proxy: trust the connection
        if not is_trusted_proxy(hop, trusted):
            return str(_parse(hop))
    return remote
