"""Issue 13, the URL fetcher's refusals: private and loopback addresses (literal, by name,
IPv4-mapped), redirects, too large (declared and streamed), slow, wrong content type, and
one good fetch. The test server is on loopback, so the tests that reach it allow loopback
explicitly; the default policy refuses it before connecting."""
from __future__ import annotations

import http.server
import threading

import pytest

from switchboard.http.media_fetch import FetchRefused, MediaFetcher, is_public

pytestmark = pytest.mark.timeout(30)
IMAGE = lambda mime: mime.startswith("image/")       # noqa: E731


class _Handler(http.server.BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/cat.png":
            self._answer(200, b"\x89PNG" + b"x" * 100, "image/png")
        elif self.path == "/big":
            self._answer(200, b"x" * 5000, "image/png")
        elif self.path == "/big-no-length":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"x" * 1000)
            self.close_connection = True
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            _Handler.release.wait(10)          # never more than the test's own bound
        elif self.path == "/html":
            self._answer(200, b"<html></html>", "text/html")
        else:
            self._answer(404, b"no", "text/plain")

    def _answer(self, status, body, mime):
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.release.clear()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    _Handler.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _loopback_allowed(**kw):
    return MediaFetcher(allowed=lambda address: address == "127.0.0.1", **kw)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "192.168.1.1", "172.16.0.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
                                     "224.0.0.1", "240.0.0.1"])
def test_private_loopback_and_reserved_addresses_are_not_public(address):
    assert not is_public(address)


def test_public_addresses_are(address="93.184.216.34"):
    assert is_public(address) and is_public("2606:2800:220:1:248:1893:25c8:1946")


def test_the_default_policy_refuses_loopback_before_connecting(server):
    with pytest.raises(FetchRefused, match="private, loopback"):
        MediaFetcher().fetch(server + "/cat.png", max_bytes=1000, mime_ok=IMAGE)


def test_a_name_that_resolves_to_a_private_address_is_refused():
    fetcher = MediaFetcher(resolver=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    with pytest.raises(FetchRefused, match="10.1.2.3"):
        fetcher.fetch("http://rebinding.example/x.png", max_bytes=1000, mime_ok=IMAGE)
    with pytest.raises(FetchRefused, match="private"):
        MediaFetcher().fetch("http://localhost:9/x.png", max_bytes=1000, mime_ok=IMAGE)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/x",
                                 "http:///nohost", "http://example.com:99999/", 5, "x" * 3000])
def test_bad_urls_are_refused(url):
    with pytest.raises(FetchRefused):
        MediaFetcher().fetch(url, max_bytes=1000, mime_ok=IMAGE)


def test_a_good_fetch(server):
    got = _loopback_allowed().fetch(server + "/cat.png", max_bytes=1000, mime_ok=IMAGE)
    assert got.data.startswith(b"\x89PNG") and got.mime == "image/png" and got.file_name == "cat.png"


def test_redirects_are_refused_not_followed(server):
    with pytest.raises(FetchRefused, match="redirect") as refused:
        _loopback_allowed().fetch(server + "/redirect", max_bytes=1000, mime_ok=IMAGE)
    assert refused.value.status == 400


@pytest.mark.parametrize("path", ["/big", "/big-no-length"])
def test_too_large_is_refused(server, path):
    with pytest.raises(FetchRefused, match="more than") as refused:
        _loopback_allowed().fetch(server + path, max_bytes=1000, mime_ok=IMAGE)
    assert refused.value.status == 413


def test_slow_is_refused_within_the_deadline(server):
    with pytest.raises(FetchRefused, match="did not answer") as refused:
        _loopback_allowed(timeout=0.5).fetch(server + "/slow", max_bytes=1000, mime_ok=IMAGE)
    assert refused.value.status == 504


def test_a_wrong_content_type_or_status_is_refused(server):
    with pytest.raises(FetchRefused, match="content type") as refused:
        _loopback_allowed().fetch(server + "/html", max_bytes=1000, mime_ok=IMAGE)
    assert refused.value.status == 415
    with pytest.raises(FetchRefused, match="404"):
        _loopback_allowed().fetch(server + "/missing", max_bytes=1000, mime_ok=IMAGE)
