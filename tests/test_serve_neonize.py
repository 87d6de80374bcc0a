"""`switchboard serve` with its default transport, neonize, on an offline machine: the API
answers at once, the session reaches `reconnecting` with the network error, and DELETE
and SIGTERM leave no process behind. The children dial a refusing proxy on 127.0.0.1, so
the test never leaves the machine, whatever its network."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.http import ADMIN_KEY, Http, Served, children_of, clean_env
from tests.support.neonize import NETWORK_FAILURE_WORDS, process_gone, refused_proxy_url, session_processes_of

pytestmark = pytest.mark.timeout(120)


def session_processes(pid: int) -> list[int]:
    """The gateway's neonize session processes, spawned or forked from its fork server
    (multiprocessing's resource tracker and the fork server itself are not ones)."""
    return session_processes_of(pid)


def wait_for(predicate, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)         # polling a separate process over HTTP: no event to await


def test_serve_with_neonize_offline(tmp_path):
    env = clean_env(SWITCHBOARD_ADMIN_KEY=ADMIN_KEY, WHATSAPP_PROXY=refused_proxy_url(),
                    WHATSAPP_RECONNECT_BASE_DELAY="60000")
    server = Served(tmp_path / "data", env=env)          # no --transport: the default
    try:
        assert "transport neonize" in server.banner
        http = Http(server.url)
        started = time.monotonic()
        status, _, body = http.post("/api/whatsapp/sessions", {"companyId": "962302"})
        assert status == 201 and body["success"], body
        assert time.monotonic() - started < 5                 # answers at once, never waits for WhatsApp
        assert body["status"] in ("starting", "reconnecting")

        def reconnecting():
            code, _, answer = http.get("/api/whatsapp/sessions/962302/status", timeout=5)
            return answer if code == 200 and answer["status"] == "reconnecting" else None
        answer = wait_for(reconnecting)
        assert answer, "the session never reached reconnecting"
        assert any(word in answer["lastError"] for word in NETWORK_FAILURE_WORDS), answer["lastError"]
        assert answer["nextRetryAt"] and answer["reconnectAttempts"] == 1
        assert http.get("/health")[0] == 200                 # the API stays responsive

        status, _, body = http.delete("/api/whatsapp/sessions/962302")
        assert status == 200 and body["success"], body
        assert wait_for(lambda: not session_processes(server.proc.pid), 10)
        assert not (tmp_path / "data" / "962302").exists()

        assert http.post("/api/whatsapp/sessions", {"companyId": "other"})[0] == 201
        everything = children_of(server.proc.pid) + session_processes(server.proc.pid)
        code, stderr = server.stop()
        assert code == 0, stderr
        assert not children_of(server.proc.pid)            # nothing at all, the tracker included
        # ... and the fork server and the tracker (and any session process) are gone for good
        assert wait_for(lambda: all(process_gone(pid) for pid in everything), 10), everything
    finally:
        server.kill()
