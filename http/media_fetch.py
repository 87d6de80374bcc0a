"""Fetching a media file from a URL a client gave us (issue 13), with limits: the gateway
itself fetches, so a URL must never reach into its own network.

- http and https only; no credentials in the URL;
- every address the host name resolves to must be a public one (no loopback, private,
  link-local, multicast, reserved, unspecified; IPv4-mapped IPv6 checked as IPv4), and
  the connection goes to the address that was checked, so a second DNS answer cannot
  swap in a private one (DNS rebinding); TLS still verifies the certificate for the name;
- redirects are refused, not followed (a redirect into the private network is the
  classic way round the check above);
- a size limit (Content-Length, and counted while reading), one deadline for the whole
  fetch (connect and every read), and an allowed content type per media kind.

Stdlib http.client rather than a client library: the check-then-connect-to-that-address
step needs the socket in hand, which http.client's connect() gives in a few lines.
"""
from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from typing import Callable

DEFAULT_TIMEOUT = 20.0
CHUNK = 64 * 1024


class FetchRefused(Exception):
    """A URL or an answer the gateway will not take; `status` is the HTTP answer to give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Fetched:
    data: bytes
    mime: str
    file_name: str


def is_public(address: str) -> bool:
    """Whether the gateway may connect to `address` on a client's behalf."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                 or ip.is_private or ip.is_unspecified)


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchRefused(f"cannot resolve {host!r}: {exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


class MediaFetcher:
    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, resolver: Resolver = resolve,
                 allowed: Callable[[str], bool] = is_public, tls: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._resolve = resolver
        self._allowed = allowed
        self._tls = tls or ssl.create_default_context()

    def fetch(self, url: object, *, max_bytes: int, mime_ok: Callable[[str], bool]) -> Fetched:
        """The body at `url`, or FetchRefused saying why not."""
        parts = self._check_url(url)
        deadline = time.monotonic() + self.timeout
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = self._resolve(parts.hostname, port)
        refused = [a for a in addresses if not self._allowed(a)]
        if not addresses or refused:
            raise FetchRefused(f"refused: {parts.hostname} resolves to a private, loopback or reserved address "
                               f"({', '.join(refused) or 'none'}); only public addresses are fetched")
        conn = self._connect(parts, addresses[0], port, deadline)
        sock = conn.sock               # ours: http.client drops conn.sock once the answer is complete
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "switchboard-media/1",
                                               "Accept": "*/*", "Accept-Encoding": "identity"})
            answer = conn.getresponse()
            if 300 <= answer.status < 400:
                raise FetchRefused(f"refused: the URL redirects ({answer.status}); give the final URL")
            if answer.status != 200:
                raise FetchRefused(f"the URL answered {answer.status} {answer.reason}", 422)
            mime = (answer.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
            if not mime_ok(mime):
                raise FetchRefused(f"refused: content type {mime or 'missing'!r} is not allowed for this media kind",
                                   415)
            length = answer.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise FetchRefused(f"refused: the file is {int(length)} bytes, more than {max_bytes}", 413)
            data = self._read(sock, answer, max_bytes, deadline)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, socket.timeout) or "timed out" in str(exc):
                raise FetchRefused(f"refused: the URL did not answer within {self.timeout:g} s", 504) from None
            raise FetchRefused(f"could not fetch the URL: {exc}", 422) from None
        finally:
            conn.close()
        name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])[:255]
        return Fetched(data, mime, name)

    # ---- helpers ----------------------------------------------------------------------

    @staticmethod
    def _check_url(url: object) -> urllib.parse.SplitResult:
        if not isinstance(url, str) or not 1 <= len(url) <= 2048:
            raise FetchRefused("'url' must be an http(s) URL of at most 2048 characters")
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port                                  # raises on a bad port
        except ValueError as exc:
            raise FetchRefused(f"not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused("'url' must be an http or https URL with a host")
        if parts.username or parts.password:
            raise FetchRefused("'url' must not carry credentials")
        return parts

    def _connect(self, parts: urllib.parse.SplitResult, address: str, port: int,
                 deadline: float) -> http.client.HTTPConnection:
        left = max(0.01, deadline - time.monotonic())
        try:
            sock = socket.create_connection((address, port), timeout=left)
        except OSError as exc:
            if isinstance(exc, socket.timeout):
                raise FetchRefused(f"refused: the URL did not answer within {self.timeout:g} s", 504) from None
            raise FetchRefused(f"could not connect to {parts.hostname}: {exc}", 422) from None
        if parts.scheme == "https":
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=parts.hostname)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise FetchRefused(f"TLS with {parts.hostname} failed: {exc}", 422) from None
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=left)
        conn.sock = sock           # connected to the address that was checked, not a new lookup
        return conn

    @staticmethod
    def _read(sock: socket.socket, answer: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
        chunks, total = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            sock.settimeout(left)
            chunk = answer.read1(CHUNK) if hasattr(answer, "read1") else answer.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_bytes:
                raise FetchRefused(f"refused: the file is more than {max_bytes} bytes", 413)
            chunks.append(chunk)
