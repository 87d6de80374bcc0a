"""The durable event log: positions that survive restarts, the append as the dedupe, damage repaired, retention."""
from __future__ import annotations

import logging
import os
import threading

import pytest

from switchboard.supervision.eventlog import EventLog, LogSettings, read_all


def fill(log, n, company="acme", start=0):
    return [log.append(company, "message", {"id": f"m{start + i}", "text": "x" * 20}) for i in range(n)]


def test_positions_keep_growing_across_restarts(tmp_path):
    log = EventLog(tmp_path)
    assert [e.seq for e in fill(log, 3)] == [1, 2, 3]
    log.close()
    log = EventLog(tmp_path)
    assert log.head == 3
    assert log.append(None, "gateway", {"action": "started"}).seq == 4
    assert [e.seq for e in read_all(log)] == [1, 2, 3, 4]
    log.close()


def test_a_message_id_is_seen_once_its_event_is_logged_and_across_restarts(tmp_path):
    log = EventLog(tmp_path)
    assert log.append("acme", "message", {"id": "A"}) is not None
    assert log.append("acme", "message", {"id": "A"}) is None          # redelivery
    assert log.append("other", "message", {"id": "A"}) is not None     # per company
    log.close()
    log = EventLog(tmp_path)
    assert log.append("acme", "message", {"id": "A"}) is None
    assert [e.company_id for e in read_all(log)] == ["acme", "other"]
    log.close()


def test_every_inbound_kind_is_deduplicated_and_send_outcomes_never_are(tmp_path):
    # WhatsApp redelivers reactions, edits and revokes like any message; a send's status
    # events repeat its (outbox) id on purpose.
    log = EventLog(tmp_path)
    for kind in ("message.reaction", "message.edit", "message.revoke", "message.location", "message.contact"):
        assert log.append("acme", kind, {"id": kind}) is not None
        assert log.append("acme", kind, {"id": kind}) is None, kind
    for status in ("sent", "delivered", "read"):
        assert log.append("acme", "message.status", {"id": "out-1", "status": status}) is not None
    log.close()
    log = EventLog(tmp_path)                     # after a restart
    assert log.append("acme", "message.reaction", {"id": "message.reaction"}) is None
    assert log.append("acme", "message", {"id": "out-1"}) is not None      # an outbox id was never "seen"
    log.close()


def test_a_failed_append_leaves_the_id_unseen(tmp_path, monkeypatch):
    log = EventLog(tmp_path)
    real = log._file.write
    monkeypatch.setattr(log._file, "write", lambda data: (_ for _ in ()).throw(OSError(28, "No space left")),
                        raising=False)
    with pytest.raises(OSError):
        log.append("acme", "message", {"id": "A"})
    monkeypatch.setattr(log._file, "write", real, raising=False)
    assert not log.seen("acme", "A")
    assert log.append("acme", "message", {"id": "A"}).seq == 1        # WhatsApp's redelivery is logged
    log.close()


def test_a_torn_tail_is_cut_off_with_a_warning_naming_the_file(tmp_path, caplog):
    log = EventLog(tmp_path)
    fill(log, 3)
    path = log.segments()[-1][1]
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"seq":4,"event":"message","ts":1,"companyId":"acme","data":{"id":"m3"')     # killed mid-write
    with caplog.at_level(logging.WARNING):
        log = EventLog(tmp_path)
    assert log.head == 3 and any(str(path) in w and "torn" in w for w in log.warnings)
    assert str(path) in caplog.text
    assert not log.seen("acme", "m3")                                  # its redelivery will be logged
    assert log.append("acme", "message", {"id": "m3"}).seq == 4
    assert [e.seq for e in read_all(log)] == [1, 2, 3, 4]
    log.close()


def test_a_garbage_line_is_skipped_and_named(tmp_path):
    log = EventLog(tmp_path)
    fill(log, 2)
    path = log.segments()[-1][1]
    log.close()
    with open(path, "ab") as f:
        f.write(b"\x00\xffnot json\n")
    log = EventLog(tmp_path)
    fill(log, 1, start=2)
    assert [e.seq for e in read_all(log)] == [1, 2, 3]
    assert any(f"{path} line 3" in w for w in log.warnings)
    log.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_segment_is_skipped_and_a_new_one_started(tmp_path):
    log = EventLog(tmp_path, LogSettings(segment_events=10))
    fill(log, 3)
    path = log.segments()[-1][1]
    log.close()
    os.chmod(path, 0)
    log = EventLog(tmp_path, LogSettings(segment_events=10))
    assert log.head >= 3 and any(str(path) in w for w in log.warnings)
    assert log.append(None, "gateway", {}).seq > 3
    log.close()
    os.chmod(path, 0o600)


def test_an_unreadable_segment_as_root_too(tmp_path, monkeypatch):
    """The same, simulated: reading the newest segment raises an I/O error."""
    log = EventLog(tmp_path, LogSettings(segment_events=10))
    fill(log, 3)
    path = log.segments()[-1][1]
    log.close()
    real_open = open

    def failing_open(file, mode="r", *a, **kw):
        if str(file) == str(path) and "r" in mode:
            raise OSError(5, "Input/output error")
        return real_open(file, mode, *a, **kw)
    monkeypatch.setattr("builtins.open", failing_open)
    log = EventLog(tmp_path, LogSettings(segment_events=10))
    monkeypatch.undo()
    assert any(str(path) in w and "cannot be read" in w for w in log.warnings)
    event = log.append(None, "gateway", {})
    assert event.seq == 11                    # past anything the unreadable segment could have held
    log.close()


def test_retention_keeps_the_log_bounded_and_the_seen_ids_outlive_their_segment(tmp_path):
    settings = LogSettings(segment_events=100, max_bytes=30_000)
    log = EventLog(tmp_path, settings)
    fill(log, 1000)
    total = sum(p.stat().st_size for _, p in log.segments())
    assert total <= 30_000 + 100 * 120 and log.first > 1
    first = log.first
    log.close()
    log = EventLog(tmp_path, settings)
    assert log.first == first and log.head == 1000
    assert log.append("acme", "message", {"id": "m0"}) is None       # its segment is gone; the id is kept
    reader = log.reader(0)
    assert reader.reset and reader.read(1)[0].seq == first
    log.close()


def test_a_reader_sees_whole_events_in_order_while_others_append(tmp_path):
    log = EventLog(tmp_path, LogSettings(segment_events=50))
    got = []
    reader = log.reader(0)

    def consume():
        while len(got) < 2000:
            batch = reader.read(100)
            got.extend(batch)
            if not batch:
                log.wait(reader.position, 1)
    thread = threading.Thread(target=consume)
    thread.start()
    writers = [threading.Thread(target=fill, args=(log, 500, f"c{n}")) for n in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    thread.join(20)
    assert [e.seq for e in got] == list(range(1, 2001))
    for n in range(4):
        assert [e.data["id"] for e in got if e.company_id == f"c{n}"] == [f"m{i}" for i in range(500)]
    log.close()


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_keeps_what_it_appended(tmp_path, policy):
    log = EventLog(tmp_path, LogSettings(fsync=policy, fsync_interval=0.01))
    fill(log, 20)
    log.close()
    assert EventLog(tmp_path).head == 20


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        LogSettings(fsync="sometimes")
    with pytest.raises(ValueError):
        LogSettings(max_bytes=0)


def test_a_full_disk_mid_record_leaves_no_torn_line_and_the_id_unseen(tmp_path):
    import resource
    import signal
    log = EventLog(tmp_path)
    fill(log, 1)
    path = log.segments()[-1][1]
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))
    try:
        with pytest.raises(OSError):
            log.append("acme", "message", {"id": "FULL", "text": "x" * 200})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert path.stat().st_size == size and not log.seen("acme", "FULL")
    assert log.append("acme", "message", {"id": "FULL"}).seq == 2
    log.close()
    assert [e.data["id"] for e in read_all(EventLog(tmp_path))] == ["m0", "FULL"]


def test_ids_of_any_alphabet_are_deduplicated_after_a_restart(tmp_path):
    odd = ['a"b\\c', "ü-идентификатор-😀", "x,\"data\":{\"id\":\"y\"}", "", " "]
    log = EventLog(tmp_path)
    for message_id in odd:
        assert log.append("acme", "message", {"id": message_id, "text": "t"}) is not None
    log.append(None, "message", {"id": "no company"})
    log.close()
    log = EventLog(tmp_path)
    assert all(log.append("acme", "message", {"id": m}) is None for m in odd)
    assert log.append(None, "message", {"id": "no company"}) is None
    assert log.append("other", "message", {"id": odd[0]}) is not None
    log.close()
