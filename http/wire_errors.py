"""JSON for the errors waitress answers itself, before the app runs.

waitress parses the request line, headers and body on its I/O thread; what it cannot
parse (an oversized request line or header block, a malformed header, a negative or
non-numeric Content-Length, a body over max_request_body_size, bad chunked encoding) it
answers with its own plain-text page and closes the connection. A client of this API
then gets the same `{"success": false, "error": ...}` shape as from the app: the
channel class below swaps waitress's ErrorTask for one that writes JSON (same status,
same close). Nothing else of waitress changes.
"""
from __future__ import annotations

import json

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask


class JsonErrorTask(ErrorTask):
    def execute(self) -> None:
        error = self.request.error
        detail = " ".join(str(error.body or "").split())[:300]
        message = error.reason.lower() + (f": {detail}" if detail else "")
        body = json.dumps({"success": False, "error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def limited_channel(per_address: int) -> type[JsonErrorChannel]:
    """The channel class, refusing a connection from an address that already holds
    `per_address` of them (a JSON 503, then close): one client cannot take every one of
    waitress's `connection_limit` slots from the others."""

    class LimitedChannel(JsonErrorChannel):
        def __init__(self, server, sock, addr, adj, map=None):
            super().__init__(server, sock, addr, adj, map)
            host = addr[0] if isinstance(addr, tuple) and addr else addr
            held = sum(1 for c in list((map or {}).values())
                       if isinstance(c, HTTPChannel) and c is not self and
                       (c.addr[0] if isinstance(c.addr, tuple) and c.addr else c.addr) == host)
            if held >= per_address:
                body = json.dumps({"success": False, "error": f"too many connections from this address "
                                                              f"(limit {per_address}); retry shortly",
                                   "retryAfter": 1000}).encode()
                head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                try:
                    sock.send(head + body)
                    sock.recv(65536)         # best effort: unread input would turn the close into a reset
                except OSError:
                    pass
                self.handle_close()

    return LimitedChannel
