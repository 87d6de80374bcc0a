"""Routing: any instance answers any request; one for a company owned elsewhere is
forwarded to its owner (create, commands, status, sends, the simulator's control API
and the event stream), a forwarded request is never forwarded again, and an owner that
does not answer is a 503 with Retry-After."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import urllib.request

import pytest

from switchboard.supervision.placement import owner_for

from .support.cluster import Instances
from .support.http import ADMIN_KEY, Http, build_app, serving, wait_until
from .support.servers import RedisServer


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def two(server, tmp_path):
    instances = Instances(server.url, tmp_path / "shared")
    with contextlib.ExitStack() as stack:
        https = {}
        for name in ("a", "b"):
            board = instances.start(name)
            served = stack.enter_context(serving(build_app(board, tmp_path / name)))
            board.cluster.advertise(served.url)
            https[name] = Http(served.url)
        assert wait_until(lambda: all(len(b.cluster.members) == 2 and all(m.url.startswith("http://127.0.0.1")
                                                                         for m in b.cluster.members.values())
                                      for b in instances.boards.values()), 10)
        yield instances, https
        stack.close()
        instances.close()


def company_on(instances: Instances, name: str) -> str:
    members = list(instances.boards[name].cluster.members.values())
    return next(c for c in (f"r{i}" for i in range(100)) if owner_for(c, members).id == name)


def test_every_route_of_a_company_owned_elsewhere_is_answered_by_its_owner(two):
    instances, http = two
    company = company_on(instances, "a")
    status, headers, body = http["b"].post("/api/whatsapp/sessions", {"companyId": company})
    assert status == 201, body
    assert headers.get("X-Switchboard-Instance") == "a"
    assert company in instances.boards["a"].company_ids() and company not in instances.boards["b"].company_ids()
    status, _, body = http["b"].post(f"/api/simulator/companies/{company}/scan", {"phone": "79990001122"})
    assert status == 200, body
    assert wait_until(lambda: http["b"].get(f"/api/whatsapp/sessions/{company}/status")[2].get("status")
                      == "connected")
    status, _, body = http["b"].post(f"/api/whatsapp/sessions/{company}/messages",
                                     {"to": "79001234567", "message": "via b"})
    assert status in (200, 202), body
    assert wait_until(lambda: [m["text"] for m in instances.network.messages("79001234567")] == ["via b"])
    status, _, body = http["b"].get(f"/api/whatsapp/sessions/{company}")
    assert status == 200 and body["status"] == "connected"
    # a bad request is still refused by the owner, unchanged
    status, _, body = http["b"].post(f"/api/whatsapp/sessions/{company}/messages", {"to": "12", "message": "x"})
    assert status == 400 and body["success"] is False
    # without a key nothing is forwarded: the first instance answers 401 itself
    status, headers, _ = http["b"].get(f"/api/whatsapp/sessions/{company}/status", key=False)
    assert status == 401 and "X-Switchboard-Instance" not in headers
    assert instances.boards["a"].session(company, create=False).stop().get(timeout=5)["status"] == "stopped"


def test_the_event_stream_of_a_company_owned_elsewhere_is_passed_through(two):
    instances, http = two
    company = company_on(instances, "a")
    http["a"].post("/api/whatsapp/sessions", {"companyId": company})
    http["a"].post(f"/api/simulator/companies/{company}/scan", {"phone": "79990001122"})
    assert wait_until(lambda: http["a"].get(f"/api/whatsapp/sessions/{company}/status")[2].get("status")
                      == "connected")
    req = urllib.request.Request(f"{http['b'].base}/api/whatsapp/sessions/{company}/events?events=message",
                                 headers={"X-Api-Key": ADMIN_KEY})
    got: list[dict] = []
    arrived = threading.Event()
    answer = urllib.request.urlopen(req, timeout=10)
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    assert answer.headers["X-Switchboard-Instance"] == "a"

    def read() -> None:
        for line in answer:
            if line.startswith(b"data:"):
                got.append(json.loads(line[5:]))
                arrived.set()
                return
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    instances.network.deliver_inbound(company, "79001234567", "hello through b")
    assert arrived.wait(10)
    assert got[0]["text"] == "hello through b"
    answer.close()
    reader.join(5)


def test_a_forwarded_request_is_answered_where_it_arrives(two):
    instances, http = two
    company = company_on(instances, "a")
    http["a"].post("/api/whatsapp/sessions", {"companyId": company})
    status, headers, _ = http["b"].get(f"/api/whatsapp/sessions/{company}/status",
                                       headers={"X-Switchboard-Forwarded-By": "a"})
    assert status == 404 and "X-Switchboard-Instance" not in headers      # b has no such session: no loop


def test_an_owner_that_does_not_answer_is_a_503_with_retry_after(two):
    instances, http = two
    company = company_on(instances, "a")
    http["a"].post("/api/whatsapp/sessions", {"companyId": company})
    b = instances.boards["b"].cluster
    b.leave()                                                # b's view of the members stays as it is now ...
    b.members["a"] = dataclasses.replace(b.members["a"], url="http://127.0.0.1:1")   # ... but a stops answering
    status, headers, body = http["b"].get(f"/api/whatsapp/sessions/{company}/status")
    assert status == 503 and headers.get("Retry-After") == "1", body


def test_the_list_of_sessions_is_the_whole_clusters(two):
    instances, http = two
    on_a, on_b = company_on(instances, "a"), company_on(instances, "b")
    for company in (on_a, on_b):
        assert http["a"].post("/api/whatsapp/sessions", {"companyId": company})[0] == 201
    for name in ("a", "b"):
        status, _, body = http[name].get("/api/whatsapp/sessions")
        assert status == 200
        assert sorted(s["companyId"] for s in body["sessions"]) == sorted([on_a, on_b])
        assert body["total"] == 2 and "unreachableInstances" not in body
    status, _, body = http["b"].get("/api/whatsapp/sessions", headers={"X-Switchboard-Forwarded-By": "a"})
    assert [s["companyId"] for s in body["sessions"]] == [on_b]          # asked by an instance: its own only


def test_cluster_admin_routes_check_their_input_and_need_the_admin_key(two):
    instances, http = two
    status, _, body = http["b"].get("/api/cluster")
    assert status == 200 and {m["id"] for m in body["members"]} == {"a", "b"} and body["instance"] == "b"
    for bad in ("nobody", "a%20b", "x" * 101, "%00"):
        status, _, body = http["b"].post(f"/api/cluster/members/{bad}/drain")
        assert status == 404 and body["success"] is False, bad
    status, _, _ = http["b"].post("/api/cluster/members/a/drain", raw=b"{not json",
                                  headers={"Content-Type": "application/json"})
    assert status == 400
    assert not any(m.draining for m in instances.boards["b"].cluster.membership.live())    # nothing changed
    assert http["b"].get("/api/cluster", key=False)[0] == 401
    status, _, body = http["b"].post("/api/cluster/members/a/drain")
    assert status == 200 and body["draining"] is True
    assert wait_until(lambda: instances.boards["b"].cluster.members["a"].draining, 5)
    assert http["b"].delete("/api/cluster/members/a/drain")[2]["draining"] is False
