"""The parts a SessionActor is made of, each on its own: the status board, the company's
record, the lifecycle table, the send queue, the reconnect schedule, the lock file."""
from __future__ import annotations

import json
import os
import random
from concurrent.futures import Future

import pytest

from switchboard.actors import messages as m
from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.connection import (Cause, ConnectFailure, Disconnected, LoggedOut, QrExhausted, Replaced,
                                           SendError, TemporaryBan)
from switchboard.actors.errors import InvalidInput, SessionUnavailable
from switchboard.actors.lifecycle import POLICY, RESTING, After, accepts_sends, refusal
from switchboard.actors.ownership import FileLock
from switchboard.actors.payload import MAX_TEXT, Text
from switchboard.actors.record import SessionRecord
from switchboard.actors.retries import Retries
from switchboard.actors.sending import SEND_RETRIES, SendQueue
from switchboard.actors.status import SessionStatus, StatusBoard

from .support.sessions import open_paths


def done(result=None, error=None) -> Future:
    future = Future()
    future.set_exception(error) if error is not None else future.set_result(result)
    return future


# ---- status board -----------------------------------------------------------------------------

def test_status_board_reads_what_the_actor_published():
    board = StatusBoard()
    board.publish("urn:a", SessionStatus("acme", "connected", phone="79001234567", sent=3))
    status = board.get("acme")
    assert status["status"] == "connected" and status["phoneNumber"] == "+79001234567"
    assert status["messagesSent"] == 3
    assert board.live("acme", max_busy=1.0) is status        # made once per write, not per read
    assert board.get("other") is None


def test_status_board_tells_a_stuck_actor_from_an_idle_one(monkeypatch):
    board = StatusBoard()
    board.publish("urn:a", SessionStatus("acme", "connected"))
    now = [100.0]
    monkeypatch.setattr("switchboard.actors.status.time.monotonic", lambda: now[0])
    board.begin("acme", "urn:a")
    now[0] += 0.5
    assert board.live("acme", max_busy=1.0) is not None        # busy, but not for long
    now[0] += 1.0
    assert board.live("acme", max_busy=1.0) is None            # stuck: the caller must ask
    board.end("acme", "urn:a")
    assert board.live("acme", max_busy=1.0) is not None


def test_a_stuck_predecessor_cannot_clear_its_successors_busy_mark(monkeypatch):
    board = StatusBoard()
    now = [0.0]
    monkeypatch.setattr("switchboard.actors.status.time.monotonic", lambda: now[0])
    board.publish("urn:new", SessionStatus("acme", "starting"))
    board.begin("acme", "urn:new")
    board.end("acme", "urn:old")                   # the old incarnation finishes its last message
    now[0] = 10.0
    assert board.live("acme", max_busy=1.0) is None
    board.drop("acme")
    assert board.get("acme") is None and board.live("acme", 1.0) is None


# ---- the company's record -----------------------------------------------------------------------

def test_record_is_read_once_written_on_change_and_keeps_unknown_keys(tmp_path):
    (tmp_path / "session.json").write_text(json.dumps({"desired": "running", "future": {"x": 1}}))
    record = SessionRecord(tmp_path)
    assert record.desired == "running" and record.state is None
    record.update(phone="79001234567", state="conflict", last_error="taken over")
    stat = (tmp_path / "session.json").stat()
    assert stat.st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "session.json").read_text()) == {
        "desired": "running", "future": {"x": 1}, "phone": "79001234567", "state": "conflict",
        "lastError": "taken over"}
    os.utime(tmp_path / "session.json", (1, 1))
    record.update(phone="79001234567")                       # no change: no write
    assert (tmp_path / "session.json").stat().st_mtime == 1
    again = SessionRecord(tmp_path)
    assert (again.phone, again.state, again.last_error) == ("79001234567", "conflict", "taken over")


def test_unreadable_record_counts_as_a_new_company(tmp_path):
    (tmp_path / "session.json").write_text("{torn")
    assert SessionRecord(tmp_path).desired is None


# ---- the lifecycle table ---------------------------------------------------------------------------

@pytest.mark.parametrize("event, state, after, stays_down", [
    (Disconnected("lost", Cause.DROPPED), "reconnecting", After.RETRY, False),
    (ConnectFailure("503", Cause.SERVICE_UNAVAILABLE), "reconnecting", After.RETRY, False),
    (LoggedOut(), "logged_out", After.NOTHING, True),
    (Replaced(), "conflict", After.NOTHING, True),
    (TemporaryBan(30), "banned", After.WAIT_BAN, False),
    (QrExhausted(), "stopped", After.NOTHING, True),
])
def test_every_ending_signal_has_one_reaction(event, state, after, stays_down):
    reaction = POLICY[type(event)]
    assert (reaction.state, reaction.after, reaction.stay_down) == (state, after, stays_down)


def test_causes_an_operator_must_fix_are_not_retryable():
    assert not ConnectFailure("405", Cause.CLIENT_OUTDATED).retryable
    assert not ConnectFailure("403", Cause.REJECTED).retryable
    retryable = set(Cause) - {Cause.CLIENT_OUTDATED, Cause.REJECTED}
    assert all(Disconnected("x", cause).retryable for cause in retryable)


def test_refusals_speak_to_a_person():
    assert refusal("failed", "gave up after 10 attempts") == "session failed (gave up after 10 attempts); reconnect it first"
    assert "scan the QR code" in refusal("qr", None)
    assert accepts_sends("reconnecting") and accepts_sends("connected")
    assert not any(accepts_sends(state) for state in RESTING)


# ---- payloads --------------------------------------------------------------------------------------

def test_text_payload_is_checked_once_with_the_apis_words():
    assert Text.of("hi").as_record() == {"type": "text", "text": "hi"}
    for bad, words in ((" ", "must not be empty"), (None, "must not be empty"), ("x" * (MAX_TEXT + 1), "longer"),
                       ("\ud800", "Unicode")):
        with pytest.raises(InvalidInput, match=words):
            Text.of(bad)


# ---- the send queue --------------------------------------------------------------------------------

class Recorder:
    """A connection whose sends resolve when the test says."""

    def __init__(self):
        self.sent: list[tuple[str, Future]] = []

    def send(self, jid, payload):
        future = Future()
        self.sent.append((payload.text, future))
        return future


def test_send_queue_keeps_one_in_flight_in_order(tmp_path):
    queue = SendQueue(tmp_path / "outbox.jsonl")
    first = queue.accept("79001234567", Text("one"), None, connected=True)
    queue.accept("79001234567", Text("two"), None, connected=True)
    conn, told = Recorder(), []
    assert queue.pump(conn, 1, told.append) == []
    assert [text for text, _ in conn.sent] == ["one"]              # the second waits for the first
    assert queue.pump(conn, 1, told.append) == [] and len(conn.sent) == 1
    conn.sent[0][1].set_result("3EB0ONE")
    (answer,) = told
    assert isinstance(answer, m.SendDone) and answer.entry_id == first.id
    outcome = queue.settle(answer.entry_id, answer.dispatch, answer.future, same_link=True)
    assert outcome.sent == "3EB0ONE" and outcome.next_may_go
    assert first.delivered.result(0) == "3EB0ONE"
    queue.pump(conn, 1, told.append)
    assert [text for text, _ in conn.sent] == ["one", "two"] and len(queue) == 1


def test_send_queue_retries_a_retryable_error_then_gives_up(tmp_path):
    queue = SendQueue(tmp_path / "outbox.jsonl")
    receipt = queue.accept("79001234567", Text("x"), None, connected=True)
    for attempt in range(1, SEND_RETRIES + 1):
        entry, number = queue.next_dispatch()
        outcome = queue.settle(entry.id, number, done(error=SendError("timeout", retryable=True)), same_link=True)
        if attempt < SEND_RETRIES:
            assert outcome.retry_in == min(30.0, 2.0 ** attempt) and not outcome.next_may_go
    assert outcome.failed == "timeout" and len(queue) == 0
    with pytest.raises(SendError):
        receipt.delivered.result(0)


def test_an_error_from_a_link_that_went_away_is_not_the_messages_fault(tmp_path):
    queue = SendQueue(tmp_path / "outbox.jsonl")
    queue.accept("79001234567", Text("x"), None, connected=True)
    entry, number = queue.next_dispatch()
    outcome = queue.settle(entry.id, number, done(error=SendError("closed", retryable=True)), same_link=False)
    assert (outcome.sent, outcome.failed, outcome.retry_in) == (None, None, None)
    assert queue.next_dispatch()[0].attempts == 0                  # still pending, no retry used


def test_send_queue_idempotency_keys_and_room(tmp_path):
    queue = SendQueue(tmp_path / "outbox.jsonl", max_queued=1)
    receipt = queue.accept("79001234567", Text("hi"), "k1", connected=False)
    again = queue.known("79001234567", Text("hi"), "k1")
    assert again.id == receipt.id and again.delivered is receipt.delivered
    with pytest.raises(InvalidInput, match="different message"):
        queue.known("79001234567", Text("other"), "k1")
    with pytest.raises(SessionUnavailable, match="outbox full"):
        queue.check_room("reconnecting")
    assert queue.discard("deleted", "stopped") == [receipt.id]
    with pytest.raises(SessionUnavailable, match="deleted"):
        receipt.delivered.result(0)


def test_outbox_lines_from_before_payloads_are_still_read(tmp_path):
    path = tmp_path / "outbox.jsonl"
    path.write_text(json.dumps({"op": "add", "id": "a1", "to": "7900", "jid": "7900@s.whatsapp.net",
                                "text": "old line", "key": "k", "accepted_at": 1.0, "attempts": 0}) + "\n")
    queue = SendQueue(path)
    entry, _ = queue.next_dispatch()
    assert entry.payload == Text("old line")
    assert queue.known("7900", Text("old line"), "k").id == "a1"     # its key still matches


# ---- the reconnect schedule ---------------------------------------------------------------------------

class FakeScheduler:
    def __init__(self):
        self.calls = []

    def call_later(self, delay, fn, *args):
        self.calls.append((delay, args[0]))


def test_retries_never_run_out_tell_operators_every_max_attempts_and_only_the_pending_wake_up_is_due():
    scheduler = FakeScheduler()
    retries = Retries(BackoffPolicy(base=1, factor=2, cap=4, jitter=0, max_attempts=3), scheduler, random.Random(1),
                      lambda _m: None)
    told = [retries.schedule(Cause.UNREACHABLE) for _ in range(9)]
    assert told == [False, False, True] * 3            # the 3rd, 6th, 9th attempt: reconnect_failed
    assert [delay for delay, _ in scheduler.calls] == [1, 2, 4, 4, 4, 4, 4, 4, 4]    # capped, never over
    assert retries.schedule(Cause.DROPPED) is False and retries.attempts == 10
    assert retries.by_cause == {"unreachable": 9, "dropped": 1}
    stale, latest = scheduler.calls[-2][1], scheduler.calls[-1][1]
    assert retries.due(latest) and not retries.due(stale)
    retries.cancel()
    assert not retries.due(latest) and retries.next_at is None
    assert retries.ban(0) == 4 and isinstance(scheduler.calls[-1][1], m.BanOver)    # no expiry: the cap


# ---- the lock file ------------------------------------------------------------------------------------

def test_file_lock_is_exclusive_and_leaves_no_descriptor(tmp_path):
    lock = tmp_path / "owner.lock"
    one, two = FileLock(lock), FileLock(lock)
    assert one.acquire(lambda _r: None) and one.held
    assert not two.acquire(lambda _r: None) and not two.held
    assert str(lock) in open_paths()
    one.release()
    assert two.acquire(lambda _r: None)
    two.release()
    two.release()                                                  # idempotent
    assert str(lock) not in open_paths()


class DeadLink:
    """A link that died before the actor heard of it: every send fails at once."""

    def __init__(self):
        self.tries = 0

    def send(self, jid, payload):
        self.tries += 1
        return done(error=SendError("not connected", retryable=True))

    def alive(self):
        return False


def test_a_dead_link_answering_at_once_does_not_use_up_a_sends_retries(tmp_path):
    queue = SendQueue(tmp_path / "outbox.jsonl")
    receipt = queue.accept("79001234567", Text("x"), None, connected=True)
    link = DeadLink()
    for _ in range(SEND_RETRIES + 2):             # more flaps than retries
        (outcome,) = queue.pump(link, 1, lambda _m: None)
        assert outcome.failed is None and outcome.retry_in is None
    assert link.tries == SEND_RETRIES + 2         # one try per pump: it stops on a dead link
    entry, _ = queue.next_dispatch()
    assert entry.id == receipt.id and entry.attempts == 0 and not receipt.delivered.done()
