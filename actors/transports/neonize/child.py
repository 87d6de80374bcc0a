"""The child-process side of the neonize transport: the ONLY module that imports neonize.

One child process per company runs one neonize client (see DESIGN.md, "Connections"):
neonize's Go glue is not safe with several clients in one process, its calls can hang
for a minute or forever, and it leaks a file descriptor per connect. The parent
(`neonize_connection.py`) starts `child_main` with multiprocessing "spawn", talks to it
over a duplex pipe and never imports neonize itself.

Wire protocol (everything picklable, plain types only):
  parent -> child: (req_id, op, args) with op in send_text | pair_phone | logout | stop
  child -> parent: dicts with a "type" key: the events produced by `map_event`, plus
                   qr, login_event, connecting, connect_failed, stopped and reply.

neonize is imported lazily, inside functions, so importing this module is cheap and
side-effect free; `map_event` can be unit-tested in any process that may import neonize.
"""
from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("switchboard.neonize.child")

_USER_SERVERS = ("s.whatsapp.net", "c.us")
# Message fields that carry no user content: key distribution and context metadata ride
# along with real messages, and arrive alone when a group's keys change.
_NON_CONTENT_FIELDS = {"messageContextInfo", "senderKeyDistributionMessage",
                       "fastRatchetKeySenderKeyDistributionMessage"}
_MEDIA_FIELDS = {"imageMessage", "videoMessage", "audioMessage", "documentMessage",
                 "stickerMessage", "ptvMessage", "documentWithCaptionMessage"}
_TEXT_FIELDS = {"conversation", "extendedTextMessage"}
_REACTION_FIELDS = {"reactionMessage", "encReactionMessage"}


# --------------------------------------------------------------------------- mapping

def _jid_str(jid: Any) -> str:
    """`user@server` without device/agent parts; "" for an unset or empty JID."""
    if jid is None or not jid.User:
        return ""
    return f"{jid.User}@{jid.Server}"


def _user_digits(jid: Any) -> str:
    """The phone digits of a phone-number JID (device suffix ':N' stripped), else ""."""
    if jid is None or jid.Server not in _USER_SERVERS:
        return ""
    user = jid.User.split(":", 1)[0].split(".", 1)[0]
    return user if user.isdigit() else ""


def _has_jid(msg: Any, field: str) -> bool:
    # The Go glue always encodes SenderAlt/RecipientAlt, empty when unknown: check User.
    return msg.HasField(field) and bool(getattr(msg, field).User)


def _to_seconds(value: int) -> float:
    """neonize's MessageInfo.Timestamp is Unix milliseconds (Go glue: Timestamp.UnixMilli());
    older glue versions sent seconds, so anything below 1e11 (year 5138 in seconds) is
    taken as seconds already."""
    return value / 1000.0 if value >= 100_000_000_000 else float(value)


def _message_kind(message: Any) -> str:
    fields = {f.name for f, _ in message.ListFields()} - _NON_CONTENT_FIELDS
    if not fields:
        return "empty"
    if "protocolMessage" in fields:          # revokes, edits, history-sync notices, key shares
        return "protocol"
    if fields & _REACTION_FIELDS:
        return "reaction"
    if fields & _TEXT_FIELDS:
        return "text"
    if fields & _MEDIA_FIELDS:
        return "media"
    return "other"


def _normalise_message(ev: Any) -> dict:
    from neonize.utils import extract_text

    info = ev.Info
    src = info.MessageSource
    sender = src.Sender
    phone = _user_digits(sender)
    sender_alt = _jid_str(src.SenderAlt) if _has_jid(src, "SenderAlt") else ""
    if not phone and _has_jid(src, "SenderAlt"):
        # LID addressing: Sender is an opaque `<digits>@lid`; the phone JID rides in SenderAlt.
        phone = _user_digits(src.SenderAlt)
    chat = _jid_str(src.Chat)
    if (not src.IsGroup and src.Chat.Server == "lid" and src.Chat.User == sender.User
            and phone and not src.IsFromMe):
        chat = f"{phone}@s.whatsapp.net"     # a 1:1 chat with a LID peer: reply to the phone JID
    kind = _message_kind(ev.Message)
    text = extract_text(ev.Message) if ev.HasField("Message") else ""
    if not text and "documentWithCaptionMessage" in {f.name for f, _ in ev.Message.ListFields()}:
        text = ev.Message.documentWithCaptionMessage.message.documentMessage.caption
    return {
        "type": "message",
        "id": info.ID,
        "chat": chat,
        "chat_jid": _jid_str(src.Chat),
        "sender": _jid_str(sender),
        "sender_alt": sender_alt,
        "phone": phone,
        "text": text,
        "kind": kind,
        "push_name": info.Pushname,
        "timestamp": _to_seconds(info.Timestamp),
        "is_group": bool(src.IsGroup),
        "from_me": bool(src.IsFromMe),
        "is_edit": bool(ev.IsEdit),
        "broadcast": src.Chat.Server in ("broadcast", "newsletter"),
    }


def map_event(ev: Any) -> dict | None:
    """neonize protobuf event -> plain picklable dict, or None for events we don't forward.

    Pure: no Go calls, no client state. Unit-tested with hand-built protobufs.
    """
    from neonize.events import (ClientOutdatedEv, ConnectedEv, ConnectFailureEv, DisconnectedEv,
                                KeepAliveRestoredEv, KeepAliveTimeoutEv, LoggedOutEv, MessageEv,
                                PairStatusEv, QREv, ReceiptEv, StreamErrorEv, StreamReplacedEv,
                                TemporaryBanEv)
    from neonize.proto.Neonize_pb2 import ConnectFailureReason

    def reason_name(msg: Any, field: str = "Reason") -> str:
        if not msg.HasField(field):
            return "UNKNOWN"
        value = getattr(msg, field)
        try:
            return ConnectFailureReason.Name(value)
        except ValueError:
            return f"CODE_{value}"

    if isinstance(ev, MessageEv):
        return _normalise_message(ev)
    if isinstance(ev, ReceiptEv):
        src = ev.MessageSource
        kind = ReceiptEv.ReceiptType.Name(ev.Type).lower() if ev.HasField("Type") else "unknown"
        return {"type": "receipt", "ids": list(ev.MessageIDs), "chat": _jid_str(src.Chat),
                "sender": _jid_str(src.Sender), "kind": kind,
                "timestamp": float(ev.Timestamp), "from_me": bool(src.IsFromMe)}
    if isinstance(ev, QREv):
        return {"type": "qr_codes", "codes": list(ev.Codes)}
    if isinstance(ev, PairStatusEv):
        if ev.Status == PairStatusEv.SUCCESS:
            return {"type": "paired", "phone": _user_digits(ev.ID) or ev.ID.User,
                    "jid": _jid_str(ev.ID), "platform": ev.Platform,
                    "business_name": ev.BusinessName}
        return {"type": "pair_error", "error": ev.Error or "pairing failed"}
    if isinstance(ev, LoggedOutEv):
        return {"type": "logged_out", "reason": reason_name(ev), "on_connect": bool(ev.OnConnect)}
    if isinstance(ev, ConnectFailureEv):
        return {"type": "connect_failure", "reason": reason_name(ev), "message": ev.Message}
    if isinstance(ev, TemporaryBanEv):
        code = TemporaryBanEv.TempBanReason.Name(ev.Code) if ev.HasField("Code") else "UNKNOWN"
        return {"type": "temporary_ban", "code": code, "expire_s": int(ev.Expire)}
    if isinstance(ev, KeepAliveTimeoutEv):
        return {"type": "keepalive_timeout", "error_count": int(ev.ErrorCount),
                "last_success": int(ev.LastSuccess)}
    if isinstance(ev, StreamErrorEv):
        return {"type": "stream_error", "code": ev.Code}
    simple = {ConnectedEv: "connected", DisconnectedEv: "disconnected",
              StreamReplacedEv: "stream_replaced", ClientOutdatedEv: "client_outdated",
              KeepAliveRestoredEv: "keepalive_restored"}
    kind = simple.get(type(ev))
    return {"type": kind} if kind else None


FORWARDED = ("ConnectedEv", "DisconnectedEv", "LoggedOutEv", "StreamReplacedEv", "PairStatusEv",
             "TemporaryBanEv", "ConnectFailureEv", "ClientOutdatedEv", "KeepAliveTimeoutEv",
             "KeepAliveRestoredEv", "StreamErrorEv", "MessageEv", "ReceiptEv")


# --------------------------------------------------------------------------- process

def _die_with_parent(parent_pid: int | None) -> None:
    """SIGKILL this process when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass                                            # not Linux: pipe EOF still ends us
    if parent_pid and os.getppid() != parent_pid:       # parent died before prctl took effect
        os._exit(3)


def _log_level(name: str) -> int:
    level = logging.getLevelName(str(name).upper())
    return level if isinstance(level, int) else logging.WARNING


def child_main(cfg: dict, conn: Any) -> None:
    """Entry point of the child process. Never returns: ends with os._exit."""
    _die_with_parent(cfg.get("parent_pid"))
    os.setpgrp()                              # a Ctrl+C in the gateway's terminal is the parent's call
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(2, 1)                             # Go's fmt.Println and neonize's print() go to stderr
    os.umask(0o077)                           # sqlite creates the DB (and -wal/-shm) as 0600
    company = cfg["company_id"]
    level = _log_level(cfg.get("go_log_level", "WARNING"))
    # Configure logging BEFORE importing neonize: its import-time basicConfig is then a no-op.
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format=f"%(asctime)s wa[{company}] %(name)s %(levelname)s %(message)s")
    logging.getLogger("neonize.utils.log").setLevel(level)   # read by connect(): the Go log level
    # We send no media: the "ffmpeg not found" warning on every connect is noise.
    logging.getLogger("neonize.utils.ffmpeg").setLevel(logging.ERROR)

    send_lock = threading.Lock()
    client: Any = None                        # assigned once neonize is imported

    def emit(msg: dict) -> None:
        try:
            with send_lock:
                conn.send(msg)
        except (OSError, ValueError):         # parent gone: nobody left to serve
            os._exit(3)

    ready = threading.Event()        # Neonize() is past its unlocked Go-map writes
    connect_done = threading.Event()
    stopping = threading.Event()

    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cmd")

    def run_command(req_id: int, op: str, args: dict) -> None:
        try:
            # Commands wait until Neonize() has written its Go maps (or connect failed).
            if not ready.wait(timeout=float(args.get("wait", 55.0))):
                raise RuntimeError("not connected: session not ready")
            if connect_done.is_set():
                raise RuntimeError("not connected: session ended")
            if op == "send_text":
                resp = client.send_message(args["jid"], args["text"])
                result: dict = {"message_id": resp.ID, "timestamp": int(resp.Timestamp)}
            elif op == "pair_phone":
                result = {"code": client.PairPhone(args["phone"], show_push_notification=True)}
            elif op == "logout":
                client.logout()
                result = {}
            else:
                raise ValueError(f"unknown command {op!r}")
            emit({"type": "reply", "req_id": req_id, "ok": True, "result": result})
        except Exception as exc:
            emit({"type": "reply", "req_id": req_id, "ok": False,
                  "error": f"{type(exc).__name__}: {exc}"})

    def stop(grace: float) -> None:
        stopping.set()
        if ready.is_set() and not connect_done.is_set():
            # A clean Disconnect is nicer to WhatsApp, but Stop() can block for a minute
            # (dial) or forever (QR phase): give it `grace`, then leave anyway.
            worker = threading.Thread(target=client.stop, daemon=True, name="stop")
            worker.start()
            worker.join(grace)
        os._exit(0)

    def command_loop() -> None:
        while True:
            try:
                req_id, op, args = conn.recv()
            except (EOFError, OSError):       # parent went away
                os._exit(3)
            if op == "stop":
                threading.Thread(target=stop, args=(float(args.get("grace", 2.0)),),
                                 daemon=True, name="stopper").start()
            elif not stopping.is_set():
                pool.submit(run_command, req_id, op, args)

    # Started before the slow neonize import so that an early "stop" is honoured at once;
    # other commands wait in run_command until `ready`, which needs the client.
    threading.Thread(target=command_loop, daemon=True, name="commands").start()

    import neonize.events as nev      # noqa: E402  (after logging and fd set-up, on purpose)
    from neonize._binder import ProxySettings
    from neonize.client import NewClient
    from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps

    class _Client(NewClient):
        def _NewClient__onLoginStatus(self, uuid: int, status: int) -> None:  # replaces print()
            ready.set()
            emit({"type": "login_event",
                  "event": ctypes.string_at(status).decode("utf-8", "replace")})

    db_path = cfg["db_path"]
    for suffix in ("", "-wal", "-shm", "-journal"):   # a store made before the umask rule
        if os.path.exists(db_path + suffix):
            os.chmod(db_path + suffix, 0o600)
    uuid = f"{company}#{cfg.get('generation', 0)}#{secrets.token_hex(4)}"   # unique per child
    props = DeviceProps(os=cfg.get("device_name") or "Switchboard",
                        platformType=DeviceProps.CHROME)
    client = _Client(db_path, props=props, uuid=uuid)
    client._stop_finalizer.detach()           # a GC'd client must never Stop() a live uuid

    def on_event(_client: Any, ev: Any) -> None:
        try:                                  # exceptions in ctypes callbacks are only printed
            if isinstance(ev, nev.ConnectedEv):
                ready.set()
            msg = map_event(ev)
            if msg is None:
                return
            if msg["type"] == "connected":
                me = getattr(client, "me", None)   # set by the Device event (code 0), sent first
                msg["phone"] = _user_digits(me.JID) if me is not None and me.HasField("JID") else ""
            emit(msg)
        except Exception:
            log.exception("mapping %s failed", type(ev).__name__)

    for name in FORWARDED:
        client.event(getattr(nev, name))(on_event)

    def on_qr(_client: Any, data: bytes) -> None:    # live QR codes (QREv is buffered until paired)
        ready.set()
        emit({"type": "qr", "code": data.decode("utf-8", "replace")})

    client.event.qr(on_qr)

    proxy = ProxySettings(proxy_address=cfg["proxy"]) if cfg.get("proxy") else None
    emit({"type": "connecting", "pid": os.getpid(), "uuid": uuid})
    code = 0
    try:
        client.connect(proxy)                 # blocks until stop(); events come on its worker
        result: dict = {"type": "stopped"}
    except BaseException as exc:              # NeonizeError: dial failed, bad DB, ...
        result = {"type": "connect_failed", "error": f"{type(exc).__name__}: {exc}"}
        code = 4
    connect_done.set()
    ready.set()                               # held commands now fail fast
    if not stopping.is_set():
        emit(result)
    sys.stderr.flush()
    os._exit(code)                            # don't wait for neonize's non-daemon threads
