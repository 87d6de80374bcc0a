"""The event stream's ids are log positions: Last-Event-ID resumes across a gateway restart
with exactly the events missed; an id the log no longer holds gets an explicit reset."""
from __future__ import annotations

from switchboard.supervision.eventlog import LogSettings, read_all

from .support.http import Http, build_app, connect_session, running_board, serving, wait_until
from .test_http_server import EventStream


def test_resume_after_a_restart_gets_exactly_the_missed_events(tmp_path):
    data = tmp_path / "data"
    with running_board(data) as board:
        with serving(build_app(board, data)) as server:
            http = Http(server.url)
            connect_session(http, "962302")
            stream = EventStream(server.url, "/api/whatsapp/sessions/962302/events")
            assert stream.wait_comment("stream open")
            for n in range(5):
                http.post("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567", "text": f"a{n}"})
            assert stream.wait_for(lambda e: e["data"].get("text") == "a4")
            seen = [int(e["id"]) for e in stream.events]
            stream.close()
            last = seen[-1]
            for n in range(5):       # missed: the client is away
                http.post("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567", "text": f"b{n}"})
            assert wait_until(lambda: board.delivery.log.head >= last + 5)
    # the gateway restarted (a new process would read the same log); the client comes back
    with running_board(data) as board:
        with serving(build_app(board, data)) as server:
            http = Http(server.url)
            expected = [e.seq for e in read_all(board.delivery.log, last) if e.company_id == "962302"]
            stream = EventStream(server.url, "/api/whatsapp/sessions/962302/events",
                                 headers={"Last-Event-ID": str(last)})
            try:
                assert stream.wait_for(lambda e: int(e["id"]) == expected[-1])
                got = [int(e["id"]) for e in stream.events]
                assert got == expected                           # no gap, no duplicate, in order
                texts = [e["data"].get("text") for e in stream.events if e["event"] == "message"]
                assert texts == [f"b{n}" for n in range(5)]
                assert not set(got) & set(seen)
                # and the live tail continues after the backlog
                board.delivery.log.append("962302", "state", {"state": "connected", "note": "live"})
                assert stream.wait_for(lambda e: e["data"].get("note") == "live")
            finally:
                stream.close()
            # ?lastEventId= is the same as the header
            query = EventStream(server.url, f"/api/whatsapp/sessions/962302/events?lastEventId={last}")
            try:
                assert query.wait_for(lambda e: int(e["id"]) == expected[-1])
                assert [int(e["id"]) for e in query.events][:len(expected)] == expected
            finally:
                query.close()


def test_an_id_older_than_retention_gets_a_reset_event(tmp_path):
    data = tmp_path / "data"
    settings = LogSettings(segment_events=20, max_bytes=6000)
    with running_board(data) as board:
        board.delivery.log.settings = settings            # small segments for this test
        board.delivery.log.append("962302", "state", {"state": "stopped"})
        for n in range(400):
            board.delivery.log.append("962302", "state", {"state": "stopped", "n": n})
        first = board.delivery.log.first
        assert first > 2
        with serving(build_app(board, data)) as server:
            stream = EventStream(server.url, "/api/whatsapp/events", headers={"Last-Event-ID": "1"})
            try:
                reset = stream.wait_for(lambda e: e.get("event") == "reset")
                assert reset is not None and reset["data"]["lastEventId"] == 1
                assert reset["data"]["oldestEventId"] == first
                assert stream.wait_for(lambda e: e.get("id") == str(first))
                assert stream.events[0]["event"] == "reset" and "id" not in stream.events[0]
                future = EventStream(server.url, "/api/whatsapp/events", headers={"Last-Event-ID": "999999999"})
                try:
                    assert future.wait_for(lambda e: e.get("event") == "reset")
                finally:
                    future.close()
            finally:
                stream.close()


def test_a_stream_without_an_id_starts_with_the_next_event(tmp_path):
    data = tmp_path / "data"
    with running_board(data) as board:
        board.delivery.log.append(None, "gateway", {"action": "old"})
        with serving(build_app(board, data)) as server:
            stream = EventStream(server.url, "/api/whatsapp/events")
            try:
                assert stream.wait_comment("stream open")
                board.delivery.log.append(None, "gateway", {"action": "new"})
                assert stream.wait_for(lambda e: e["data"].get("action") == "new")
                assert all(e["data"].get("action") != "old" for e in stream.events)
            finally:
                stream.close()
