"""The one check of a proxy URL, shared by configuration and the transports.

whatsmeow dials through an HTTP(S) CONNECT proxy or a SOCKS5 proxy; `socks5h` (the
proxy resolves names) is accepted as well, since Go's dialer treats it like socks5.
"""
from __future__ import annotations

from urllib.parse import urlsplit

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def validate_proxy(proxy: str | None) -> str | None:
    """`scheme://host:port` with a scheme of PROXY_SCHEMES (user:pass@ allowed); None for
    no proxy. Raises ValueError for anything else."""
    if not proxy:
        return None
    parts = urlsplit(proxy)
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
        raise ValueError(f"unsupported proxy {proxy!r}: expected http://host:port or socks5://host:port")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"invalid proxy port in {proxy!r}") from exc
    return proxy
