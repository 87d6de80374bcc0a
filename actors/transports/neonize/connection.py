"""The real WhatsApp transport: one neonize client per company, each in its own child process.

This module runs in the gateway process and must never import neonize, directly or
indirectly: the child is started with multiprocessing "spawn" and imports
`neonize_child` (the only module that touches neonize) by name.

Why a process per company (measured, ../shared/notes/neonize.md §0, §4, §9): neonize's Go
glue keeps unlocked global maps (concurrent connects and sends abort the whole process),
its calls can block for a minute (dial) or forever (after a QR timeout), and every
connect leaks a file descriptor. A child process confines all of that to one tenant, and
killing it is the only reliable way to end a hung Go call.

Event mapping (child dict -> actors/connection.py event):
  qr               -> QrCode(code, 60 s for the first code, 20 s after)
  login_event      -> success: nothing (Paired/Connected follow);
                      err-client-outdated: ConnectFailure (final);
                      anything else (QR timeout): QrExhausted (final, child killed:
                      Go may hang in FetchMe forever)
  paired           -> Paired(phone)
  connected        -> Connected(phone of this device, "" if unknown)
  disconnected     -> Disconnected("connection lost", retryable) - whatsmeow also
                      reconnects by itself and may send Connected again
  keepalive_timeout-> nothing while whatsmeow retries; once pings have failed for
                      KEEPALIVE_GIVE_UP s (whatsmeow then forces a silent reconnect)
                      one Disconnected("keep-alive lost ...", retryable)
  logged_out       -> LoggedOut(reason) (final)
  stream_replaced  -> Replaced() (final)
  temporary_ban    -> TemporaryBan(expires_in, reason=code name) (final)
  connect_failure  -> ConnectFailure(name: message, retryable for 500/503) (final)
  client_outdated  -> ConnectFailure("client outdated: upgrade neonize") (final)
  connect_failed   -> Disconnected(<the Go error, e.g. "... no such host">, retryable) (final;
                      the initial connect is never retried by whatsmeow, the child exits)
  stream_error     -> logged only (the server closes the socket; Disconnected follows)
  message          -> IncomingMessage (our own messages, status broadcasts, protocol
                      messages and reactions are dropped)
  receipt          -> Receipt (delivered/read/played of other people only)
  child exit not requested by close() and not after a final event
                   -> Disconnected("session process exited with code N", retryable), once.
After a final event the child is ended in the background; after close() nothing is emitted.
"""
from __future__ import annotations

import importlib
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import wait as _wait_ready
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ...connection import (ConnectFailure, Connected, ConnectionEvent, Disconnected, EmitFn,
                         IncomingMessage, LoggedOut, Paired, QrCode, QrExhausted, Receipt,
                         Replaced, SendError, TemporaryBan)
from ...scheduler import Scheduler, TimerHandle

log = logging.getLogger("switchboard.neonize")

_CTX = multiprocessing.get_context("spawn")      # never fork: a forked Go runtime hangs
DB_NAME = "whatsapp.sqlite3"
DB_FILES = (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal")
FIRST_QR_TTL = 60.0                              # whatsmeow: first code 60 s, then 20 s each
NEXT_QR_TTL = 20.0
QR_STALL_SLACK = 30.0                            # no new code/login event this long after expiry: hung
KEEPALIVE_GIVE_UP = 180.0                        # whatsmeow's KeepAliveMaxFailTime
COMMAND_TIMEOUT = 60.0
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_RETRYABLE_FAILURES = {"SERVICE_UNAVAILABLE", "INTERNAL_SERVER_ERROR"}
_RETRYABLE_HINTS = ("not connected", "websocket", "client is nil", "timed out", "timeout",
                    "deadline", "connection", "eof", "broken pipe", "session ended",
                    "session not ready", "not running", "closed")
_DELIVERED_KINDS = {"text", "media"}
_FINAL, _END = "final", "end"                    # outcomes of a child event, see _translate
_RECEIPT_KINDS = {"delivered", "read", "played"}


# --------------------------------------------------------------------------- helpers

def _child_entry(cfg: dict, conn: Any) -> None:
    """Runs in the child. Imports the neonize side by name so the parent never has to."""
    module = importlib.import_module(f"{__package__}.child")
    module.child_main(cfg, conn)


def validate_proxy(proxy: str | None) -> str | None:
    """`http://host:port` or `socks5://host:port` (user:pass@ allowed); raise ValueError otherwise."""
    if not proxy:
        return None
    parts = urlsplit(proxy)
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
        raise ValueError(f"unsupported proxy {proxy!r}: expected http://host:port or socks5://host:port")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"invalid proxy port in {proxy!r}") from exc
    return proxy


def _ensure_private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)                    # mkdir's mode is filtered by the umask


def _failed(exc: BaseException) -> Future:
    fut: Future = Future()
    fut.set_exception(exc)
    return fut


def _is_retryable(error: str) -> bool:
    text = error.lower()
    return any(hint in text for hint in _RETRYABLE_HINTS)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


_timers_lock = threading.Lock()
_timers_instance: Scheduler | None = None


def _timers() -> Scheduler:
    """One timer thread for every deadline of every connection (command replies, connect
    deadline, QR stall), started on first use."""
    global _timers_instance
    with _timers_lock:
        if _timers_instance is None:
            _timers_instance = Scheduler("neonize-timers")
        return _timers_instance


class _Spawner:
    """Starts every child from one long-lived daemon thread.

    PR_SET_PDEATHSIG (set in the child) fires when the *thread* that forked the child
    exits, not the process; children forked by a short-lived thread (a timer, a stopped
    actor's) would be killed with it.

    Children started here also skip spawn's re-import of the parent's __main__: the
    gateway's entry point pulls in bottle, waitress, redis... (about +20 MB USS per child,
    measured), and an embedding script without an `if __name__ == "__main__"` guard would
    run again in every child. Our child targets live in importable modules, not __main__.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def start(self, proc: Any) -> None:
        with self._lock:
            if self._thread is None:
                _install_lean_preparation(self._local)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="neonize-spawner")
                self._thread.start()
        done: Future = Future()
        self._queue.put((proc, done))
        done.result(timeout=60)       # spawning takes well under a second; never wait forever

    def _run(self) -> None:
        while True:
            proc, done = self._queue.get()
            target = getattr(proc, "_target", None)
            self._local.lean = getattr(target, "__module__", "__main__") != "__main__"
            try:
                proc.start()
                done.set_result(None)
            except BaseException as exc:          # noqa: BLE001 - handed to the caller
                done.set_exception(exc)
            finally:
                self._local.lean = False


def _install_lean_preparation(local: threading.local) -> None:
    """Wrap multiprocessing.spawn.get_preparation_data so that, on the spawner thread only,
    the child is not told to re-import the parent's __main__."""
    from multiprocessing import spawn

    original = spawn.get_preparation_data
    if getattr(original, "_switchboard_lean", False):
        return

    def get_preparation_data(name: str) -> dict:
        data = original(name)
        if getattr(local, "lean", False):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    get_preparation_data._switchboard_lean = True   # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


_spawner = _Spawner()
_generations = itertools.count(1)


# --------------------------------------------------------------------------- connection

class NeonizeConnection:
    """One attempt at a live WhatsApp link for one company: one child process."""

    def __init__(self, company_id: str, company_dir: Path, emit: EmitFn, *,
                 device_name: str = "Switchboard", proxy: str | None = None,
                 go_log_level: str = "WARNING", stop_grace: float = 3.0,
                 connect_deadline: float | None = None,
                 command_timeout: float = COMMAND_TIMEOUT, generation: int | None = None,
                 child_target: Callable[[dict, Any], None] | None = None) -> None:
        """`child_target` replaces the neonize child (tests use it to get a child that
        ignores "stop" and SIGTERM); it must be importable by name in a spawned process."""
        self.company_id = company_id
        self.company_dir = Path(company_dir)
        self.db_path = self.company_dir.resolve() / DB_NAME
        self.generation = generation if generation is not None else next(_generations)
        self._emit_fn = emit
        self._device_name = device_name
        self._proxy = validate_proxy(proxy)
        self._go_log_level = go_log_level
        self._grace = float(stop_grace)
        self._connect_deadline = connect_deadline
        self._command_timeout = float(command_timeout)
        self._child_target = child_target or _child_entry

        # _lock guards the state below and is held while calling emit, so that close()
        # (which sets _closed under it) is a barrier: no event after close() returns.
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()      # one writer on the pipe at a time
        self._proc_lock = threading.Lock()      # reaping and signalling the child
        self._stop_lock = threading.Lock()      # one open/stop sequence at a time
        self._proc: Any = None
        self._conn: Any = None
        self._reader: threading.Thread | None = None
        self._pending: dict[int, tuple[Future, TimerHandle, Callable[[dict], Any]]] = {}
        self._req_ids = itertools.count(1)
        self._opened = False
        self._closed = False        # close() called: emit nothing more
        self._final = False         # a final event went out: the child's exit says nothing new
        self._exited = False        # the child is gone (pipe EOF seen)
        self._connected = False
        self._qr_count = 0
        self._phone = ""
        self._keepalive_lost = False
        self._deadline_timer: TimerHandle | None = None
        self._qr_timer: TimerHandle | None = None
        self.pid: int | None = None
        self.exitcode: int | None = None

    def __repr__(self) -> str:
        return f"<NeonizeConnection {self.company_id}#{self.generation} pid={self.pid}>"

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Spawn the child and return at once; everything else arrives as events."""
        with self._stop_lock:
            with self._lock:
                if self._opened:
                    raise RuntimeError("a NeonizeConnection can be opened only once")
                self._opened = True
                if self._closed:
                    return
            cfg = {"company_id": self.company_id, "generation": self.generation,
                   "db_path": str(self.db_path), "device_name": self._device_name,
                   "proxy": self._proxy, "go_log_level": self._go_log_level,
                   "parent_pid": os.getpid()}
            parent_end = None
            try:
                _ensure_private_dir(self.company_dir)
                parent_end, child_end = _CTX.Pipe(duplex=True)
                proc = _CTX.Process(target=self._child_target, args=(cfg, child_end),
                                    name=f"wa-{self.company_id}#{self.generation}", daemon=True)
                try:
                    _spawner.start(proc)
                finally:
                    child_end.close()           # else the parent keeps the pipe open: no EOF
            except Exception as exc:
                log.exception("company %s: could not start the session process", self.company_id)
                if parent_end is not None:
                    parent_end.close()
                with self._lock:
                    self._final = self._exited = True
                    self._emit(Disconnected(reason=f"could not start session process: {exc}",
                                            retryable=True))
                return
            self._proc, self._conn, self.pid = proc, parent_end, proc.pid
            self._reader = threading.Thread(target=self._read_loop, args=(proc, parent_end),
                                            daemon=True, name=f"wa-reader-{self.company_id}")
            self._reader.start()
            if self._connect_deadline:
                self._deadline_timer = _timers().call_later(self._connect_deadline,
                                                          self._on_connect_deadline)
            log.info("company %s: session process %s started (generation %s)",
                     self.company_id, proc.pid, self.generation)

    def close(self) -> None:
        """Idempotent; returns within about stop_grace + 4 s; no events afterwards."""
        with self._lock:
            first = not self._closed
            self._closed = True
            self._cancel_timers()
        if first:
            self._fail_pending("connection closed", retryable=True)
        self._stop_child(self._grace)
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(1.0)

    def alive(self) -> bool:
        with self._lock:
            if self._closed or self._final or self._exited or self._proc is None:
                return False
            proc = self._proc
        return not _wait_ready([proc.sentinel], 0)

    # ----------------------------------------------------------------- commands

    def send_text(self, jid: str, text: str) -> Future:
        """Resolves to the WhatsApp message id (str) or fails with SendError."""
        problem = self._not_connected()
        if problem:
            return _failed(SendError(problem, retryable=True))
        return self._request("send_text", {"jid": jid, "text": text},
                             lambda result: str(result["message_id"]))

    def pair_phone(self, phone: str) -> Future:
        """Resolves to an 8-character pairing code; needs a QR session in progress."""
        digits = "".join(ch for ch in str(phone) if ch.isdigit())
        if not 7 <= len(digits) <= 15:
            return _failed(SendError(f"invalid phone number {phone!r}", retryable=False))
        with self._lock:
            problem = self._unavailable()
            retryable = True
            if problem is None and self._connected:
                problem, retryable = "already linked: no pairing code needed", False
            elif problem is None and self._qr_count == 0:
                problem = "not connected: no QR session in progress yet"
        if problem:
            return _failed(SendError(problem, retryable=retryable))
        return self._request("pair_phone", {"phone": digits}, lambda result: str(result["code"]))

    def logout(self) -> Future:
        """Unlinks this device on WhatsApp's side (no LoggedOut event follows); resolves to None."""
        problem = self._not_connected()
        if problem:
            return _failed(SendError(problem, retryable=True))
        return self._request("logout", {}, self._logged_out_by_us)

    def _logged_out_by_us(self, _result: dict) -> None:
        # whatsmeow disconnects and deletes the store, and sends no event about it.
        with self._lock:
            self._connected = False

    def _not_connected(self) -> str | None:
        """Why a command that needs a live session cannot run now, or None."""
        with self._lock:
            problem = self._unavailable()
            return problem if problem is not None or self._connected else "not connected"

    def _unavailable(self) -> str | None:
        if self._closed:
            return "connection closed"
        if self._proc is None:
            return "not connected: connection not opened"
        if self._exited or self._final:
            return "not connected: session process is not running"
        return None

    def _request(self, op: str, args: dict, convert: Callable[[dict], Any]) -> Future:
        fut: Future = Future()
        req_id = next(self._req_ids)
        timer = _timers().call_later(self._command_timeout, lambda: self._on_command_timeout(req_id))
        with self._lock:
            if self._exited or self._closed:
                timer.cancel()
                fut.set_exception(SendError("not connected: session process is not running",
                                            retryable=True))
                return fut
            self._pending[req_id] = (fut, timer, convert)
        try:
            with self._send_lock:
                self._conn.send((req_id, op, dict(args, wait=self._command_timeout)))
        except (OSError, ValueError) as exc:
            self._resolve(req_id, error=SendError(f"session process is not running: {exc}",
                                                  retryable=True))
        return fut

    def _resolve(self, req_id: int, *, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            entry = self._pending.pop(req_id, None)
        if entry is None:
            return
        fut, timer, _ = entry
        timer.cancel()
        try:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        except InvalidStateError:               # the caller cancelled it
            pass

    def _on_command_timeout(self, req_id: int) -> None:
        self._resolve(req_id, error=SendError(
            f"no reply from the session process within {self._command_timeout:g}s",
            retryable=True))

    def _on_reply(self, msg: dict) -> None:
        with self._lock:
            entry = self._pending.get(msg.get("req_id"))
        if entry is None:
            return                              # timed out or failed already
        if msg.get("ok"):
            try:
                value = entry[2](msg.get("result") or {})
            except Exception as exc:
                self._resolve(msg["req_id"], error=SendError(f"bad reply: {exc}", retryable=False))
                return
            self._resolve(msg["req_id"], result=value)
        else:
            error = str(msg.get("error") or "command failed")
            self._resolve(msg["req_id"], error=SendError(error, retryable=_is_retryable(error)))

    def _fail_pending(self, reason: str, *, retryable: bool) -> None:
        with self._lock:
            ids = list(self._pending)
        for req_id in ids:
            self._resolve(req_id, error=SendError(reason, retryable=retryable))

    # ----------------------------------------------------------------- child side

    def _read_loop(self, proc: Any, conn: Any) -> None:
        try:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    break
                except Exception:
                    log.exception("company %s: undecodable message from the session process",
                                  self.company_id)
                    continue
                try:
                    if msg.get("type") == "reply":
                        self._on_reply(msg)
                    else:
                        self._on_child_event(msg)
                except Exception:
                    log.exception("company %s: handling %r failed", self.company_id, msg.get("type"))
        finally:
            self._on_child_gone(proc, conn)

    def _on_child_gone(self, proc: Any, conn: Any) -> None:
        if not _wait_ready([proc.sentinel], 5.0):
            # The pipe is closed but the process lingers: it is of no use any more.
            self._signal(proc, "kill")
            _wait_ready([proc.sentinel], 5.0)
        code = self._reap(proc)
        try:
            conn.close()
        except OSError:
            pass
        with self._lock:
            self._exited = True
            self._connected = False
            self._cancel_timers()
        self._fail_pending("not connected: session process exited", retryable=True)
        with self._lock:
            if self._closed or self._final:
                log.info("company %s: session process %s ended (code %s)",
                         self.company_id, proc.pid, _exit_text(code))
                return
            self._final = True
            log.warning("company %s: session process %s exited unasked (code %s)",
                        self.company_id, proc.pid, _exit_text(code))
            self._emit(Disconnected(
                reason=f"session process exited with code {_exit_text(code)}", retryable=True))

    def _on_child_event(self, msg: dict) -> None:
        with self._lock:
            if self._closed:
                return
            kind = msg.get("type")
            events, outcome = self._translate(kind, msg)
            if self._final and kind not in ("message", "receipt"):
                return                          # a final event already went out
            if outcome is not None:             # this connection is over
                self._final = True
                self._cancel_timers()
            for event in events:
                self._emit(event)
        if outcome == _END:
            self._end_child_async(self._grace)

    def _translate(self, kind: str | None, msg: dict) -> tuple[list[ConnectionEvent], str | None]:
        """Child dict -> (events, outcome); updates state. Called with _lock held.

        outcome None: the link goes on; _FINAL: it is over and the child exits by itself;
        _END: it is over and the child must be ended (whatsmeow would idle or hang)."""
        if kind in ("qr", "login_event", "connected", "paired", "connect_failed"):
            if self._deadline_timer is not None:      # the child answered: it is not hung
                self._deadline_timer.cancel()
                self._deadline_timer = None
        if kind == "qr":
            ttl = FIRST_QR_TTL if self._qr_count == 0 else NEXT_QR_TTL
            self._qr_count += 1
            self._arm_qr_stall(ttl)
            return [QrCode(code=str(msg["code"]), expires_in=ttl)], None
        if kind == "login_event":
            self._disarm_qr_stall()
            event = str(msg.get("event", ""))
            if event == "success":
                return [], None
            if "outdated" in event:
                return [ConnectFailure(reason="client outdated: upgrade neonize",
                                       retryable=False)], _END
            log.info("company %s: QR login ended with %r", self.company_id, event)
            return [QrExhausted()], _END        # Go may now hang in FetchMe: end the child
        if kind == "paired":
            self._phone = str(msg.get("phone") or "")
            return [Paired(phone=self._phone)], None
        if kind == "pair_error":
            log.warning("company %s: pairing failed: %s", self.company_id, msg.get("error"))
            return [], None
        if kind == "connected":
            self._connected = True
            self._keepalive_lost = False
            self._disarm_qr_stall()
            self._phone = str(msg.get("phone") or self._phone)
            return [Connected(phone=self._phone)], None
        if kind == "disconnected":
            self._connected = False
            return [Disconnected(reason="connection lost", retryable=True)], None
        if kind == "keepalive_timeout":
            return self._on_keepalive_timeout(msg), None
        if kind == "keepalive_restored":
            self._keepalive_lost = False
            return [], None
        if kind == "logged_out":
            self._connected = False
            return [LoggedOut(reason=str(msg.get("reason") or "device removed").lower())], _END
        if kind == "stream_replaced":
            self._connected = False
            return [Replaced()], _END
        if kind == "temporary_ban":
            self._connected = False
            return [TemporaryBan(expires_in=float(msg.get("expire_s") or 0),
                                 reason=str(msg.get("code") or "temporary ban"))], _END
        if kind == "connect_failure":
            self._connected = False
            name = str(msg.get("reason") or "UNKNOWN")
            text = f"{name}: {msg.get('message')}" if msg.get("message") else name
            return [ConnectFailure(reason=text, retryable=name in _RETRYABLE_FAILURES)], _END
        if kind == "client_outdated":
            self._connected = False
            return [ConnectFailure(reason="client outdated: upgrade neonize", retryable=False)], _END
        if kind == "connect_failed":
            self._connected = False
            error = str(msg.get("error") or "unknown error")
            return [Disconnected(reason=f"connect failed: {error}", retryable=True)], _FINAL
        if kind == "stream_error":
            log.warning("company %s: stream error %s", self.company_id, msg.get("code"))
            return [], None
        if kind == "message":
            event = self._incoming(msg)
            return ([event] if event else []), None
        if kind == "receipt":
            if msg.get("from_me") or msg.get("kind") not in _RECEIPT_KINDS:
                return [], None                 # our own devices' receipts, retries, syncs
            return [Receipt(message_ids=tuple(msg.get("ids") or ()), chat=str(msg.get("chat", "")),
                            kind=str(msg["kind"]), timestamp=float(msg.get("timestamp") or 0))], None
        if kind == "connecting":
            log.debug("company %s: child %s connecting as %s", self.company_id,
                      msg.get("pid"), msg.get("uuid"))
            return [], None
        return [], None                         # stopped, qr_codes, unknown: nothing to say

    def _incoming(self, msg: dict) -> IncomingMessage | None:
        if msg.get("from_me") or msg.get("broadcast"):
            return None                         # our own sends (other devices), status updates
        text = str(msg.get("text") or "")
        if msg.get("kind") not in _DELIVERED_KINDS and not text:
            return None                         # protocol messages, reactions, key shares
        return IncomingMessage(id=str(msg["id"]), chat=str(msg.get("chat") or ""),
                               phone=str(msg.get("phone") or ""), text=text,
                               timestamp=float(msg.get("timestamp") or 0.0),
                               push_name=str(msg.get("push_name") or ""),
                               is_group=bool(msg.get("is_group")))

    def _on_keepalive_timeout(self, msg: dict) -> list[ConnectionEvent]:
        # whatsmeow keeps pinging and, after KEEPALIVE_GIVE_UP s of failures, drops the
        # socket and reconnects without a Disconnected event: that is when we speak up.
        last = int(msg.get("last_success") or 0)
        failing_for = time.time() - last if last > 1_000_000_000 else 0.0
        if self._keepalive_lost or not self._connected or failing_for < KEEPALIVE_GIVE_UP:
            return []
        self._keepalive_lost = True
        self._connected = False
        return [Disconnected(reason=f"keep-alive lost for {failing_for:.0f}s", retryable=True)]

    def _arm_qr_stall(self, ttl: float) -> None:
        self._disarm_qr_stall()
        seen = self._qr_count
        self._qr_timer = _timers().call_later(ttl + QR_STALL_SLACK, lambda: self._on_qr_stall(seen))

    def _disarm_qr_stall(self) -> None:
        if self._qr_timer is not None:
            self._qr_timer.cancel()
            self._qr_timer = None

    def _on_qr_stall(self, seen: int) -> None:
        with self._lock:
            if self._closed or self._final or self._connected or self._qr_count != seen:
                return
            log.warning("company %s: no QR code or login event after the last code expired",
                        self.company_id)
            self._final = True
            self._emit(QrExhausted())
        self._end_child_async(self._grace)

    def _on_connect_deadline(self) -> None:
        with self._lock:
            self._deadline_timer = None
            if self._closed or self._final or self._exited:
                return
            self._final = True
            self._emit(Disconnected(
                reason=f"no answer from the session within {self._connect_deadline:g}s "
                       "(connect deadline): killed", retryable=True))
        self._end_child_async(0.5)             # it is hung: don't wait for a clean stop

    def _cancel_timers(self) -> None:
        for timer in (self._deadline_timer, self._qr_timer):
            if timer is not None:
                timer.cancel()
        self._deadline_timer = self._qr_timer = None

    def _emit(self, event: ConnectionEvent) -> None:
        """Called with _lock held; close() takes _lock, so nothing is emitted after it."""
        if self._closed:
            return
        log.debug("company %s: %r", self.company_id, event)
        try:
            self._emit_fn(event)
        except Exception:
            log.exception("company %s: emit(%r) failed", self.company_id, event)

    # ----------------------------------------------------------------- process control

    def _reap(self, proc: Any) -> int | None:
        with self._proc_lock:
            if proc.exitcode is None and _wait_ready([proc.sentinel], 0):
                # The sentinel closes a moment before the child becomes a zombie:
                # wait (blocking waitpid, bounded by the exit in progress) to collect it.
                proc.join(2.0)
            self.exitcode = proc.exitcode
            return proc.exitcode

    def _signal(self, proc: Any, how: str) -> None:
        # Only under _proc_lock and only while unreaped, so the pid cannot have been reused.
        with self._proc_lock:
            if proc.exitcode is None:
                (proc.kill if how == "kill" else proc.terminate)()

    def _end_child_async(self, grace: float) -> None:
        # Never block the reader or the shared timer thread on a stop.
        threading.Thread(target=self._stop_child, args=(grace,), daemon=True,
                         name=f"wa-stop-{self.company_id}").start()

    def _stop_child(self, grace: float) -> None:
        """Ask, wait `grace`, SIGTERM, wait 2 s, SIGKILL, wait 2 s: bounded to grace + 4 s."""
        with self._stop_lock:
            proc = self._proc
            if proc is None:
                return
            if not _wait_ready([proc.sentinel], 0):
                try:
                    with self._send_lock:
                        self._conn.send((0, "stop", {"grace": max(0.2, grace - 0.5)}))
                except (OSError, ValueError):
                    pass
                if not _wait_ready([proc.sentinel], grace):
                    self._signal(proc, "terminate")
                    if not _wait_ready([proc.sentinel], 2.0):
                        self._signal(proc, "kill")
                        _wait_ready([proc.sentinel], 2.0)
            self._reap(proc)


# --------------------------------------------------------------------------- transport

class NeonizeTransport:
    """Makes NeonizeConnections; owns no process itself but ends all of them on close()."""

    name = "neonize"

    def __init__(self, *, device_name: str = "Switchboard", proxy: str | None = None,
                 proxies: dict[str, str] | None = None, go_log_level: str = "WARNING",
                 stop_grace: float = 3.0, connect_deadline: float | None = None,
                 command_timeout: float = COMMAND_TIMEOUT) -> None:
        self.device_name = device_name
        self.proxy = validate_proxy(proxy)
        self.proxies = {company: validate_proxy(url) for company, url in (proxies or {}).items()}
        self.go_log_level = go_log_level
        self.stop_grace = stop_grace
        self.connect_deadline = connect_deadline
        self.command_timeout = command_timeout
        self._lock = threading.Lock()
        self._connections: list[NeonizeConnection] = []

    def connect(self, company_id: str, company_dir: Path, emit: EmitFn) -> NeonizeConnection:
        """A new, not yet opened connection (the owner calls open())."""
        proxy = self.proxies.get(company_id, self.proxy)
        conn = NeonizeConnection(company_id, Path(company_dir), emit, device_name=self.device_name,
                                 proxy=proxy, go_log_level=self.go_log_level,
                                 stop_grace=self.stop_grace, connect_deadline=self.connect_deadline,
                                 command_timeout=self.command_timeout)
        with self._lock:
            self._connections = [c for c in self._connections if not c._closed] + [conn]
        return conn

    def forget(self, company_id: str, company_dir: Path) -> None:
        """Delete the company's stored WhatsApp credentials (the sqlite store)."""
        for name in DB_FILES:
            try:
                (Path(company_dir) / name).unlink()
            except FileNotFoundError:
                pass
        log.info("company %s: WhatsApp credentials deleted", company_id)

    def close(self) -> None:
        """Close every connection this transport made, in parallel (bounded by one close)."""
        with self._lock:
            connections, self._connections = self._connections, []
        threads = [threading.Thread(target=c.close, daemon=True, name=f"wa-close-{c.company_id}")
                   for c in connections]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + self.stop_grace + 6.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
