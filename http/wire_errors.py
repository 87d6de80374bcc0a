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
