"""Supervisor: one-for-one restarts, restart intensity, the supervisor log, derived metrics."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pykka
import pytest

from switchboard.actors.connection import Cause, ConnectFailure
from switchboard.actors.errors import SessionUnavailable
from switchboard.actors.messages import InjectedCrash
from switchboard.supervision.events import parse_since, read_log

from .support.sessions import FAST_BACKOFF, FAST_RESTARTS, ScriptedTransport, StateWaiter, assert_stays, link

ROOT = Path(__file__).resolve().parent.parent


def crash(board, company_id: str, reason: str = "boom") -> None:
    board.directory.refs[company_id].tell(InjectedCrash(reason))


def wait_for_event(board, kind: str, company_id: str, count: int = 1, timeout: float = 5.0) -> list:
    seen, done = [], threading.Event()

    def on(event):
        seen.append(event)
        if len(seen) >= count:
            done.set()
    unsubscribe = board.on_event(on, kinds=(kind,), company_id=company_id)
    try:
        assert done.wait(timeout), f"only {len(seen)} {kind} events for {company_id}"
        return seen
    finally:
        unsubscribe()


def test_crashed_actor_is_restarted_and_reconnects(board, waiter):
    link(board, waiter, "acme")
    old_ref = board.directory.refs["acme"]
    restarted = threading.Event()
    board.on_event(lambda e: e.data.get("attempt") == 1 and restarted.set(), kinds=("spawned",), company_id="acme")
    crash(board, "acme")
    assert restarted.wait(5)
    status = waiter.state("acme", "connected")
    assert board.directory.refs["acme"] is not old_ref
    assert status["phoneNumber"] == "+79990001122"
    assert board.network.max_seen("acme") == 1          # the dead actor's connection was closed first


def test_restarted_actor_remembers_why_it_is_down(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "replace")
    waiter.state("acme", "conflict")
    crash(board, "acme")
    wait_for_event(board, "spawned", "acme")
    status = waiter.state("acme", "conflict")
    assert "replaced" in status["lastError"]


def test_restarted_actor_recovers_the_outbox(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "refuse", seconds=0.5)
    waiter.state("acme", "reconnecting")
    receipt = board.session("acme").send("79001234567", "survives a crash").get(timeout=5)
    assert receipt.queued
    crash(board, "acme")
    waiter.until("acme", lambda s: s["status"] == "connected" and s["queued"] == 0, timeout=5)
    assert [m["text"] for m in board.network.messages("79001234567")] == ["survives a crash"]


def test_flapping_actor_is_parked_and_neighbours_keep_running(board, waiter):
    link(board, waiter, "acme", phone="79990000001")
    link(board, waiter, "other", phone="79990000002")
    for n in range(FAST_RESTARTS.max_restarts + 1):
        waiter.until("acme", lambda s: s["status"] != "restarting")
        crash(board, "acme", f"bug #{n}")
        if n < FAST_RESTARTS.max_restarts:
            wait_for_event(board, "spawned", "acme")
    status = waiter.state("acme", "failed")
    assert "parked" in status["lastError"] and "bug #3" in status["lastError"]
    assert board.network.live_count("acme") == 0
    assert waiter.status("other")["status"] == "connected"
    # a parked company stays parked until an operator starts it
    board.session("acme").start().get(timeout=5)
    waiter.state("acme", "connected")
    records = read_log(board.data_dir / "supervisor.log", company="acme")
    assert any(r["event"] == "gave_up" for r in records)
    assert not any(r["event"] in ("crashed", "gave_up") for r in read_log(board.data_dir / "supervisor.log",
                                                                          company="other"))


def test_calls_during_a_restart_wait_for_the_new_actor(board, waiter):
    link(board, waiter, "acme")
    handle = board.session("acme")
    crash(board, "acme")
    # the handle resolves the restarted actor; it never talks to the dead one
    assert handle.status().get(timeout=5)["companyId"] == "acme"


def test_handle_of_a_dead_actor_fails_cleanly(board, waiter):
    link(board, waiter, "acme")
    ref = board.supervisor.detach("acme").get(timeout=5)
    ref.stop(block=True, timeout=5)
    with pytest.raises(SessionUnavailable):
        board.session("acme", create=False).status().get(timeout=5)


def test_supervisor_log_has_one_json_line_per_event(board, waiter):
    link(board, waiter, "acme")
    crash(board, "acme", "kaboom")
    waiter.state("acme", "connected")
    board.bus.flush()
    lines = (board.data_dir / "supervisor.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    kinds = [r["event"] for r in records if r.get("companyId") == "acme"]
    for kind in ("spawned", "state", "crashed", "restarting"):
        assert kind in kinds
    crashed = next(r for r in records if r["event"] == "crashed")
    assert "kaboom" in crashed["error"] and "Traceback" in crashed["traceback"]
    states = [r["state"] for r in records if r["event"] == "state" and r["companyId"] == "acme"]
    assert states[:4] == ["starting", "qr", "starting", "connected"]      # paired: the QR is spent
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", r["ts"]) for r in records)


def test_read_log_filters_by_company_and_time(board, waiter):
    link(board, waiter, "a1", phone="79990000001")
    link(board, waiter, "b2", phone="79990000002")
    board.bus.flush()
    path = board.data_dir / "supervisor.log"
    assert {r["companyId"] for r in read_log(path, company="a1")} == {"a1"}
    assert read_log(path, since=parse_since("1h")) == read_log(path)
    assert read_log(path, since=parse_since("2999-01-01T00:00:00Z")) == []
    assert len(read_log(path, limit=2)) == 2
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_metrics_are_derived_from_session_states(board, waiter):
    link(board, waiter, "a1", phone="79990000001")
    link(board, waiter, "a2", phone="79990000002")
    board.session("a3").start().get(timeout=5)
    waiter.state("a3", "qr")
    board.session("a2").send("79001234567", "x").get(timeout=5).delivered.result(timeout=5)
    waiter.until("a2", lambda s: s["messagesSent"] == 1)
    metrics = board.metrics()
    assert metrics["totalSessions"] == 3 and metrics["activeConnections"] == 2
    assert metrics["sessionsByState"]["qr"] == 1 and metrics["messagesSent"] == 1
    board.network.fault("a1", "logout")
    waiter.state("a1", "logged_out")
    board.network.fault("a1", "drop")               # nothing live: must not push anything below zero
    metrics = board.metrics()
    assert metrics["activeConnections"] == 1 and min(metrics["sessionsByState"].values()) >= 0


def test_remove_logs_out_stops_and_deletes(board, waiter):
    link(board, waiter, "acme")
    assert board.remove("acme") is True
    assert not (board.data_dir / "acme").exists()
    assert "acme" not in board.company_ids()
    assert board.network.live_count("acme") == 0
    assert board.remove("acme") is False


def test_restore_resumes_only_running_sessions(board_factory, tmp_path, network):
    data = tmp_path / "data"
    board = board_factory(network, data_dir=data)
    w = StateWaiter(board)
    link(board, w, "runs", phone="79990000001")
    link(board, w, "rests", phone="79990000002")
    board.session("rests").stop().get(timeout=5)
    w.close()
    board.stop()
    board2 = board_factory(network, data_dir=data)
    w2 = StateWaiter(board2)
    assert board2.company_ids() == ["rests", "runs"]
    w2.state("runs", "connected")
    assert w2.status("rests")["status"] == "stopped"
    w2.close()


def test_restore_can_stagger_the_connects(board_factory, tmp_path, network):
    data = tmp_path / "data"
    board = board_factory(network, data_dir=data)
    w = StateWaiter(board)
    for i in range(3):
        link(board, w, f"c{i}", phone=f"7999000000{i}")
    w.close()
    board.stop()
    connected_at = {}
    board2 = board_factory(network, data_dir=data, restore=False, restore_stagger=0.2)
    board2.on_event(lambda e: e.data["state"] == "connected" and connected_at.setdefault(e.company_id, time.monotonic()),
                    kinds=("state",))
    board2.supervisor.restore(0.2).get(timeout=5)
    w2 = StateWaiter(board2)
    assert w2.status("c2")["status"] == "reconnecting"          # waits for its turn, sends queue meanwhile
    for i in range(3):
        w2.state(f"c{i}", "connected")
    board2.bus.flush()
    assert connected_at["c1"] - connected_at["c0"] >= 0.15 and connected_at["c2"] - connected_at["c1"] >= 0.15
    w2.close()


def test_stop_ends_every_actor_and_thread(board_factory, network):
    before = {t.ident for t in threading.enumerate()}
    board = board_factory(network)
    w = StateWaiter(board)
    for i in range(5):
        link(board, w, f"c{i}", phone=f"7999000000{i}")
    w.close()
    board.stop()
    assert pykka.ActorRegistry.get_all() == []
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []
    assert all(network.live_count(f"c{i}") == 0 for i in range(5))


def test_http_folder_does_not_shadow_the_standard_library():
    result = subprocess.run([sys.executable, "-c", "import http.client, bottle; print(http.client.__file__)"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (ROOT / "http" / "__init__.py").exists()
    assert str(ROOT / "http") not in result.stdout


def test_readme_embedding_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- embedding-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README has no embedding example"
    result = subprocess.run([sys.executable, "-c", match.group(1)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "79001234567 Hello" in result.stdout


def test_a_restarted_actor_tries_a_failed_session_again_and_a_remaining_cause_fails_it_again(board_factory, tmp_path):
    """`failed` keeps the desired state: a restart (here an actor crash) tries once more,
    which is how a fix (an upgrade) takes effect; once, a failed session stayed down."""
    outdated = ConnectFailure("client outdated (405)", Cause.CLIENT_OUTDATED)
    transport = ScriptedTransport([outdated, outdated])
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    waiter = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    waiter.state("acme", "failed")
    board.directory.refs["acme"].tell(InjectedCrash("bug"))
    wait_for_event(board, "spawned", "acme")
    waiter.until("acme", lambda _s: transport.opened == 2)
    status = waiter.state("acme", "failed")
    assert status["lastError"] == "client outdated (405)"
    waiter.close()


def test_a_company_that_cannot_even_start_is_parked_for_good(board, waiter):
    (board.data_dir / "acme" / "outbox.jsonl").mkdir(parents=True)     # on_start fails every time
    spawned = []
    board.on_event(lambda e: spawned.append(e), kinds=("spawned",), company_id="acme")
    board.session("acme", create=False)
    board.supervisor.ensure("acme").get(timeout=5)
    gave_up = threading.Event()
    board.on_event(lambda e: "cannot run even parked" in e.data["error"] and gave_up.set(), kinds=("gave_up",))
    assert gave_up.wait(10)
    board.bus.flush()
    count = len(spawned)
    assert count == FAST_RESTARTS.max_restarts + 2         # first + restarts + the parked one
    status = next(s for s in board.statuses() if s["companyId"] == "acme")
    assert status["status"] == "failed" and "cannot run even parked" in status["lastError"]
    with pytest.raises(SessionUnavailable):
        board.session("acme", create=False).status().get(timeout=5)
    _no_more = threading.Event()
    assert not _no_more.wait(FAST_RESTARTS.sweep_interval * 3)
    board.bus.flush()
    assert len(spawned) == count


def test_remove_reports_the_sends_it_discards(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "refuse", seconds=60)
    waiter.state("acme", "reconnecting")
    receipt = board.session("acme").send("79001234567", "never sent").get(timeout=5)
    failed = []
    board.on_event(lambda e: failed.append(e.data), kinds=("message.failed",))
    assert board.remove("acme", logout=False)
    board.bus.flush()
    assert failed == [{"id": receipt.id, "error": "session deleted"}]
    with pytest.raises(SessionUnavailable, match="session deleted"):
        receipt.delivered.result(timeout=5)


def test_a_removed_company_created_again_never_overlaps_a_closing_link(board_factory, tmp_path):
    """Delete then create at once, while the old link takes its time to close: the new
    session must wait for it (its owner.lock is kept until the old link is gone)."""
    from .support.sessions import SlowClosingTransport, make_network
    transport = SlowClosingTransport(make_network())
    board = board_factory(data_dir=tmp_path / "rm", transport_override=transport)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    closer = threading.Timer(0.3, transport.finish_all)     # the old link goes away a little later
    closer.start()
    try:
        assert board.remove("acme", logout=False)
        board.session("acme").start().get(timeout=5)
        waiter.state("acme", "qr")
        assert board.network.max_seen("acme") == 1
    finally:
        closer.join()
        waiter.close()


def test_concurrent_deletes_remove_once(board, waiter):
    link(board, waiter, "acme")
    results = []
    threads = [threading.Thread(target=lambda: results.append(board.remove("acme", logout=False)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]
    assert not (board.data_dir / "acme").exists()
