"""The durable outbox: what survives torn lines, short writes and restarts."""
from __future__ import annotations

import signal

import pytest

from switchboard.actors.outbox import Outbox, OutboxEntry
from switchboard.actors.payload import Text


def test_torn_outbox_line_is_skipped_on_recovery(tmp_path):
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    box.add(OutboxEntry(id="a", to="7900", jid="7900@s.whatsapp.net", payload=Text("one")))
    box.add(OutboxEntry(id="b", to="7900", jid="7900@s.whatsapp.net", payload=Text("two")))
    box.done("a", "3EB0")
    box.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"add","id":"c","to":"79')        # crash mid-write
    assert [e.id for e in Outbox(path).pending()] == ["b"]


def test_torn_tail_is_cut_so_the_next_record_survives(tmp_path):
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    box.add(OutboxEntry(id="a1", to="7900", jid="7900@s.whatsapp.net", payload=Text("one")))
    box.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"add","id":"a2","to":"79')           # power lost mid-write
    box = Outbox(path)
    box.add(OutboxEntry(id="a3", to="7900", jid="7900@s.whatsapp.net", payload=Text("three")))
    box.close()
    assert [e.id for e in Outbox(path).pending()] == ["a1", "a3"]


def test_short_write_is_refused_and_leaves_no_torn_line(tmp_path):
    import resource
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    box.add(OutboxEntry(id="a1", to="7900", jid="7900@s.whatsapp.net", payload=Text("one")))
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))        # a disk that fills up mid-record
    try:
        with pytest.raises(OSError):
            box.add(OutboxEntry(id="a2", to="7900", jid="7900@s.whatsapp.net", payload=Text("x" * 100)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert path.stat().st_size == size
    box.add(OutboxEntry(id="a3", to="7900", jid="7900@s.whatsapp.net", payload=Text("three")))
    box.close()
    assert [e.id for e in Outbox(path).pending()] == ["a1", "a3"]


def test_a_send_cut_off_by_a_crash_is_resent_only_where_the_transport_pins_its_message_id(tmp_path):
    # Handed over, then the process died: the outcome is unknown.
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    box.add(OutboxEntry(id="a", to="7900", jid="7900@s.whatsapp.net", payload=Text("one")))
    box.add(OutboxEntry(id="b", to="7900", jid="7900@s.whatsapp.net", payload=Text("two")))
    box.sending("a")
    box.close()
    # neonize cannot pin the id: a repeat could reach the recipient twice, so "a" is unconfirmed.
    unpinned = Outbox(path)
    assert unpinned.recovered_unconfirmed == ["a"]
    assert [e.id for e in unpinned.pending()] == ["b"]
    unpinned.close()
    # A transport that sends under the entry's own id makes the repeat the same message.
    box = Outbox(tmp_path / "pinned.jsonl")
    box.add(OutboxEntry(id="a", to="7900", jid="7900@s.whatsapp.net", payload=Text("one")))
    box.sending("a")
    box.close()
    pinned = Outbox(tmp_path / "pinned.jsonl", resend_interrupted=True)
    assert pinned.recovered_unconfirmed == []
    assert [e.id for e in pinned.pending()] == ["a"]
