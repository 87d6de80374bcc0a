"""Python sinks (`Switchboard(sinks=[factory])`): each reads the log through its own durable
cursor, is retried when it raises, resumes after a restart, and never holds up another."""
from __future__ import annotations

import threading

from switchboard.supervision.delivery import Delivery
from switchboard.supervision.eventlog import LogSettings

from .support.http import wait_until
from .support.sessions import StateWaiter, link


class Collecting:
    def __init__(self, name="collect", fail_first=0, block: threading.Event | None = None):
        self.name = name
        self.events = []
        self.calls = 0
        self.fail_first = fail_first
        self.block = block

    def __call__(self, event):
        self.calls += 1
        if self.block is not None:
            self.block.wait(30)
        if self.calls <= self.fail_first:
            raise ConnectionError("the sink's backend is down")
        self.events.append(event)

    def close(self):
        if self.block is not None:
            self.block.set()


def test_a_python_sink_gets_every_event_once_in_order_and_resumes_after_a_restart(board_factory, network, tmp_path):
    first = Collecting()
    board = board_factory(network, data_dir=tmp_path / "d", sinks=[lambda data_dir: first])
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    ids = [network.deliver_inbound("acme", "79001234567", f"n{n}") for n in range(20)]
    assert wait_until(lambda: [e.data["id"] for e in first.events if e.kind == "message"] == ids)
    seen = [e.seq for e in first.events]
    assert seen == sorted(set(seen))
    waiter.close()
    board.stop()
    from switchboard.supervision.eventlog import EventLog
    other = EventLog(tmp_path / "d" / "events")                       # e.g. a run without this sink
    other.append("acme", "state", {"note": "while the sink was away"})
    other.close()
    second = Collecting()
    board = board_factory(network, data_dir=tmp_path / "d", sinks=[lambda data_dir: second])
    assert wait_until(lambda: any(e.data.get("note") == "while the sink was away" for e in second.events))
    assert second.events[0].seq > seen[-1]                                # after its cursor, nothing twice
    assert not {e.seq for e in second.events} & set(seen)


def test_a_sink_that_raises_is_retried_with_the_same_event(tmp_path):
    d = Delivery(tmp_path / "data")
    sink = Collecting(fail_first=2)
    runner = d.add_sink(sink)
    runner._retry = type(runner._retry)(base=0.01, cap=0.02, jitter=0, max_attempts=100)
    event = d.log.append("acme", "state", {"state": "connected"})
    assert wait_until(lambda: [e.seq for e in sink.events] == [event.seq])
    assert sink.calls == 3 and runner.failures == 2
    d.close()


def test_a_stuck_sink_holds_up_no_other_sink_and_no_append(tmp_path):
    d = Delivery(tmp_path / "data")
    stuck = Collecting("stuck", block=threading.Event())
    fine = Collecting("fine")
    d.add_sink(stuck)
    d.add_sink(fine)
    for n in range(500):
        d.log.append("acme", "state", {"n": n})                # the appends do not wait for any sink
    assert wait_until(lambda: len(fine.events) == 500)
    assert stuck.events == [] and d.runners["stuck"].lag == 500
    d.close()                                                  # interrupts the stuck one


def test_a_sink_further_behind_than_retention_skips_with_an_error(tmp_path, caplog):
    settings = LogSettings(segment_events=50, max_bytes=4000)
    d = Delivery(tmp_path / "data", settings)
    sink = Collecting("late")
    d.add_sink(sink)
    d.remove_sink("late")
    for n in range(600):
        d.log.append("acme", "state", {"n": n})
    runner = d.add_sink(Collecting("late"))                    # comes back after its events were deleted
    assert wait_until(lambda: runner.lag == 0)
    assert runner.skipped > 0 and "deleted by the log's retention" in caplog.text
    d.close()
