"""neonize protobuf events -> child dicts -> Connection events, all offline.

Stage 1 (protobuf -> dict) runs `map_event` in a separate process
(tests/neonize_mapping_cases.py), because this process must never import neonize.
Stage 2 (dict -> event) feeds those dicts to a NeonizeConnection that was never opened,
so no child process is involved.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchboard.actors.connection import (Cause, ConnectFailure, Connected, Disconnected, IncomingMessage,
                                           Interrupted, LoggedOut, LogoutResult, Paired, QrCode,
                                           QrExhausted, Receipt, Replaced, SendError, TemporaryBan)
from switchboard.actors.payload import Text
from switchboard.actors.transports.neonize import NeonizeConnection

CASES_SCRIPT = Path(__file__).with_name("neonize_mapping_cases.py")


@pytest.fixture(scope="module")
def mapped() -> dict:
    proc = subprocess.run([sys.executable, str(CASES_SCRIPT)], capture_output=True, text=True,
                          timeout=60, cwd=CASES_SCRIPT.parent.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def conn(tmp_path):
    """A connection that was never opened: _on_child_event is the reader's entry point."""
    events: list = []
    c = NeonizeConnection("acme", tmp_path / "acme", events.append)
    c.events = events
    yield c
    c.close()


def feed(c: NeonizeConnection, *messages: dict) -> list:
    for msg in messages:
        c._on_child_event(msg)
    return c.events


# ------------------------------------------------------------------ stage 1: map_event

def test_plain_and_extended_text(mapped):
    m = mapped["conversation"]
    assert m["type"] == "message" and m["id"] == "3EB0C0FFEE" and m["text"] == "hello"
    assert m["chat"] == "15550001111@s.whatsapp.net"
    assert m["phone"] == "15550001111"            # device suffix :7 stripped
    assert m["push_name"] == "Alice" and m["is_group"] is False and m["from_me"] is False
    assert mapped["extended_text"]["text"] == "see https://example.com"


def test_timestamp_is_unix_seconds(mapped):
    # neonize sends MessageInfo.Timestamp in Unix milliseconds (Go: Timestamp.UnixMilli()).
    assert mapped["conversation"]["timestamp"] == pytest.approx(1_700_000_000.123)
    assert mapped["legacy_seconds_timestamp"]["timestamp"] == 1_700_000_000.0


def test_media_captions_are_text(mapped):
    assert mapped["image_caption"]["text"] == "a cat"
    assert mapped["video_caption"]["text"] == "a clip"
    assert mapped["document_caption"]["text"] == "the invoice"
    assert mapped["document_with_caption_wrapper"]["text"] == "wrapped caption"
    assert {mapped[k]["kind"] for k in ("image_caption", "video_caption", "image_no_caption")} == {"media"}
    assert mapped["image_no_caption"]["text"] == ""


def test_lid_sender_uses_sender_alt(mapped):
    m = mapped["lid_sender_with_alt"]
    assert m["sender"] == "204812345678901@lid"
    assert m["phone"] == "15550002222"
    assert m["chat"] == "15550002222@s.whatsapp.net"     # 1:1 LID chat: reply to the phone JID
    unknown = mapped["lid_sender_without_alt"]
    assert unknown["phone"] == "" and unknown["chat"] == "204812345678901@lid"


def test_group_messages(mapped):
    g = mapped["group"]
    assert g["is_group"] is True and g["chat"] == "120363025246125888@g.us"
    assert g["phone"] == "15550003333" and g["push_name"] == "Carol" and g["text"] == "hi all"
    assert mapped["group_lid_sender"]["phone"] == "15550004444"
    assert mapped["group_lid_sender"]["chat"] == "120363025246125888@g.us"


def test_message_kinds(mapped):
    assert mapped["from_me"]["from_me"] is True
    assert mapped["protocol_revoke"]["kind"] == "protocol"
    assert mapped["reaction"]["kind"] == "reaction"
    assert mapped["key_distribution_only"]["kind"] == "empty"
    assert mapped["status_broadcast"]["broadcast"] is True


def test_receipts(mapped):
    r = mapped["receipt_read"]
    assert r == {"type": "receipt", "ids": ["3EB0AA", "3EB0BB"], "chat": "15550001111@s.whatsapp.net",
                 "chat_jid": "15550001111@s.whatsapp.net",
                 "sender": "15550001111@s.whatsapp.net", "kind": "read",
                 "timestamp": 1_700_000_001.0, "from_me": False}
    assert mapped["receipt_delivered"]["kind"] == "delivered"
    assert mapped["receipt_untyped"]["kind"] == "unknown"


def test_lifecycle_events(mapped):
    assert mapped["qr"] == {"type": "qr_codes", "codes": ["2@abc,def,ghi,jkl", "2@mno,pqr,stu,vwx"]}
    assert mapped["pair_success"]["type"] == "paired" and mapped["pair_success"]["phone"] == "15550005555"
    assert mapped["pair_error"] == {"type": "pair_error", "error": "key mismatch"}
    assert mapped["connected"] == {"type": "connected"}
    assert mapped["disconnected"] == {"type": "disconnected"}
    assert mapped["logged_out"] == {"type": "logged_out", "reason": "MAIN_DEVICE_GONE", "on_connect": True,
                                    "status": 403}
    assert mapped["logged_out_no_reason"]["reason"] == "UNKNOWN"
    assert mapped["logged_out_no_reason"]["status"] == 401        # a stream error: an unlink
    assert mapped["stream_replaced"] == {"type": "stream_replaced"}
    assert mapped["temporary_ban"] == {"type": "temporary_ban", "code": "SEND_TO_TOO_MANY_PEOPLE",
                                       "expire_s": 3600}
    assert mapped["connect_failure_503"] == {"type": "connect_failure", "reason": "SERVICE_UNAVAILABLE",
                                             "status": 503, "message": "service unavailable"}
    assert mapped["connect_failure_ua"]["status"] == 409
    assert mapped["client_outdated"] == {"type": "client_outdated"}
    assert mapped["keepalive_timeout"] == {"type": "keepalive_timeout", "error_count": 3,
                                           "last_success": 1_700_000_000}
    assert mapped["keepalive_restored"] == {"type": "keepalive_restored"}
    assert mapped["stream_error"] == {"type": "stream_error", "code": "516"}
    assert mapped["presence_not_forwarded"] is None


# ------------------------------------------------------------------ stage 2: dict -> event

def test_incoming_message_events(conn, mapped):
    feed(conn, *(mapped[k] for k in ("conversation", "lid_sender_with_alt", "group", "image_caption",
                                     "image_no_caption")))
    assert conn.events == [
        IncomingMessage(id="3EB0C0FFEE", chat="15550001111@s.whatsapp.net", phone="15550001111",
                        text="hello", timestamp=pytest.approx(1_700_000_000.123), push_name="Alice"),
        IncomingMessage(id="3EB0C0FFEE", chat="15550002222@s.whatsapp.net", phone="15550002222",
                        text="via lid", timestamp=pytest.approx(1_700_000_000.123), push_name="Alice"),
        IncomingMessage(id="3EB0C0FFEE", chat="120363025246125888@g.us", phone="15550003333",
                        text="hi all", timestamp=pytest.approx(1_700_000_000.123), push_name="Carol",
                        is_group=True),
        IncomingMessage(id="3EB0C0FFEE", chat="15550001111@s.whatsapp.net", phone="15550001111",
                        text="a cat", timestamp=pytest.approx(1_700_000_000.123), push_name="Alice"),
        IncomingMessage(id="3EB0C0FFEE", chat="15550001111@s.whatsapp.net", phone="15550001111",
                        text="", timestamp=pytest.approx(1_700_000_000.123), push_name="Alice"),
    ]


def test_own_and_non_user_messages_are_dropped(conn, mapped):
    feed(conn, *(mapped[k] for k in ("from_me", "protocol_revoke", "reaction", "key_distribution_only",
                                     "status_broadcast")))
    assert conn.events == []


def test_receipt_events(conn, mapped):
    feed(conn, mapped["receipt_read"], mapped["receipt_untyped"],
         dict(mapped["receipt_delivered"], from_me=True))
    assert conn.events == [Receipt(message_ids=("3EB0AA", "3EB0BB"), chat="15550001111@s.whatsapp.net",
                                   kind="read", timestamp=1_700_000_001.0)]


def test_qr_codes_pairing_and_connect(conn, mapped):
    feed(conn, {"type": "qr", "code": "2@one"}, {"type": "qr", "code": "2@two"},
         {"type": "login_event", "event": "success"}, mapped["pair_success"],
         dict(mapped["connected"], phone="15550005555"))
    assert conn.events == [QrCode("2@one", 60.0), QrCode("2@two", 20.0), Paired("15550005555"),
                           Connected("15550005555")]


def test_connected_phone_falls_back_to_paired_phone(conn, mapped):
    feed(conn, mapped["pair_success"], {"type": "connected", "phone": ""})
    assert conn.events[-1] == Connected("15550005555")
    c2 = NeonizeConnection("x", conn.company_dir, [].append)
    c2.events = []
    c2._emit_fn = c2.events.append
    feed(c2, {"type": "connected"})
    assert c2.events == [Connected("")]
    c2.close()


def test_qr_timeout_after_the_last_code_is_final(conn):
    feed(conn, *({"type": "qr", "code": f"2@{n}"} for n in range(6)),
         {"type": "login_event", "event": "timeout"}, {"type": "connected"}, {"type": "disconnected"})
    assert conn.events[-1] == QrExhausted() and len(conn.events) == 7
    assert not conn.alive()


def test_drop_and_reconnect_inside_the_child_is_an_interruption(conn, mapped):
    feed(conn, mapped["connected"], mapped["disconnected"], mapped["connected"])
    assert conn.events == [Connected(""), Interrupted("connection lost; reconnecting", Cause.DROPPED),
                           Connected("")]


@pytest.mark.parametrize("case, expected", [
    ("logged_out", LoggedOut("WhatsApp locked this account (403): the phone's owner must unlock it in "
                             "WhatsApp before it can be linked again", 403, "locked")),
    ("stream_replaced", Replaced()),
    ("temporary_ban", TemporaryBan(3600.0, "SEND_TO_TOO_MANY_PEOPLE")),
    ("connect_failure_503", ConnectFailure("SERVICE_UNAVAILABLE (503): service unavailable",
                                           Cause.SERVICE_UNAVAILABLE, 503)),
    ("connect_failure_ua", ConnectFailure("BAD_USER_AGENT (409): bad user agent", Cause.REJECTED, 409)),
    ("client_outdated", ConnectFailure("client outdated: upgrade neonize", Cause.CLIENT_OUTDATED, 405)),
])
def test_final_events(conn, mapped, case, expected):
    feed(conn, mapped["connected"], mapped[case], mapped["disconnected"], mapped["connected"])
    assert conn.events == [Connected(""), expected]       # nothing after a final event
    assert not conn.alive()


def test_connect_failed_names_the_network_error(conn):
    error = ('NeonizeError: failed to dial whatsapp web websocket: ... dial tcp: lookup '
             'web.whatsapp.com on 10.255.255.53:53: no such host')
    feed(conn, {"type": "connect_failed", "error": error}, {"type": "disconnected"})
    assert conn.events == [Disconnected(f"connect failed: {error}", Cause.UNREACHABLE)]


def test_two_keepalive_timeouts_interrupt_and_restored_reconnects(conn, mapped):
    feed(conn, mapped["connected"],
         {"type": "keepalive_timeout", "error_count": 1, "last_success": int(time.time()) - 30},
         mapped["keepalive_restored"], mapped["stream_error"])
    assert conn.events == [Connected("")]                 # one lost ping is nothing yet
    ping = {"type": "keepalive_timeout", "error_count": 1, "last_success": int(time.time()) - 40}
    feed(conn, ping, dict(ping, error_count=2), dict(ping, error_count=3))
    assert len(conn.events) == 2                            # once, not per timeout
    lost = conn.events[1]
    assert isinstance(lost, Interrupted) and lost.cause is Cause.KEEPALIVE
    assert "unanswered 2 times" in lost.reason
    exc = conn.send("15550001111@s.whatsapp.net", Text("into the void")).exception(timeout=1)
    assert isinstance(exc, SendError) and exc.retryable     # nothing sent into the dead socket
    feed(conn, mapped["keepalive_restored"])
    assert conn.events[2:] == [Connected("")] and conn._translator.connected


def test_nothing_after_close(conn, mapped):
    conn.close()
    feed(conn, mapped["connected"], mapped["conversation"])
    assert conn.events == []


def test_commands_fail_fast_when_not_connected(conn):
    for fut in (conn.send("15550001111@s.whatsapp.net", Text("hi")), conn.pair_phone("15550001111")):
        exc = fut.exception(timeout=1)
        assert isinstance(exc, SendError) and exc.retryable
    result = conn.logout().result(timeout=1)                  # offline: says WhatsApp was not told
    assert isinstance(result, LogoutResult) and not result.told_whatsapp
    assert "not told" in result.reason and "phone keeps listing" in result.reason
    bad = conn.pair_phone("12").exception(timeout=1)
    assert isinstance(bad, SendError) and not bad.retryable


def test_parent_modules_do_not_import_neonize():
    assert not [name for name in sys.modules if name == "neonize" or name.startswith("neonize.")]


# ------------------------------------------------------------------ causes and error codes

@pytest.mark.parametrize("msgs, cause", [
    ([{"type": "connect_failed", "error": "dial tcp: lookup web.whatsapp.com: no such host"}],
     Cause.UNREACHABLE),
    ([{"type": "connect_failure", "reason": "INTERNAL_SERVER_ERROR", "status": 500}],
     Cause.SERVICE_UNAVAILABLE),
    ([{"type": "connect_failure", "reason": "CLIENT_OUTDATED", "status": 405}], Cause.CLIENT_OUTDATED),
    ([{"type": "connect_failure", "reason": "GENERIC", "status": 400}], Cause.REJECTED),
    ([{"type": "connect_failure", "reason": "CODE_77"}], Cause.REJECTED),
    ([{"type": "client_outdated"}], Cause.CLIENT_OUTDATED),
    ([{"type": "qr", "code": "2@x"}, {"type": "login_event", "event": "err-client-outdated"}],
     Cause.CLIENT_OUTDATED),
])
def test_each_mapped_drop_or_failure_carries_its_cause(conn, msgs, cause):
    feed(conn, *msgs)
    last = conn.events[-1]
    assert isinstance(last, (Disconnected, ConnectFailure)) and last.cause is cause
    assert last.retryable is cause.retryable

