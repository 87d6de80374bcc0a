"""Child side: the command loop around one neonize client. With `mapping`, the only code
that imports neonize, and only inside the spawned child.

One child process per company runs one neonize client (see DESIGN.md, "Connections"):
neonize's Go glue is not safe with several clients in one process, its calls can hang
for a minute or forever, and it leaks a file descriptor per connect. The parent
(`connection.py`) starts `child_main` through spawner.py (forked from the warm fork
server, which has imported neonize's pure-Python side but never its Go library; or
spawned), talks to it over a duplex pipe (the vocabulary is in `wire.py`) and never imports neonize itself.

What each command does and which code a failure gets is in child_commands.py.

neonize is imported lazily, inside functions, so importing this module is cheap and
side-effect free.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import wire
from .child_commands import NotReady, execute, failure_code
from .mapping import FORWARDED, PnForLid, map_event, store_lookup, user_digits

log = logging.getLogger("switchboard.neonize.child")

DRAIN_QUIET = 0.3               # stopping: no event for this long after Disconnect = drained


def _forkserver() -> Any:
    """The preload module if this child was forked from the warm fork server, else None."""
    return sys.modules.get(f"{__package__}.preload")


def _die_with_parent(parent_pid: int | None) -> None:
    """SIGKILL this process when the parent dies (Linux prctl PR_SET_PDEATHSIG).

    Forked from the fork server, the parent is the server, which dies with the gateway
    (preload.py); then the gateway's own death shows as EOF on the pipe as well."""
    server = _forkserver()
    if server is not None and server.FORKSERVER_PID:
        parent_pid = server.FORKSERVER_PID
        _release_forkserver()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass                                            # not Linux: pipe EOF still ends us
    if parent_pid and os.getppid() != parent_pid:       # parent died before prctl took effect
        os._exit(wire.EXIT_PARENT_GONE)


def _release_forkserver() -> None:
    """Close the fork server's "alive" pipe inherited from it: the server exits when the
    gateway's end closes, which must not wait for the last child (whose death waits for
    the server's, PR_SET_PDEATHSIG)."""
    from multiprocessing import forkserver
    fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        forkserver._forkserver._forkserver_alive_fd = None


def _go_runtime_defaults() -> None:
    """The Go runtime reads its settings from the environment once, when the library
    loads: set defaults before that. One connection needs no more than two Ps; Go's own
    default is one per CPU, each with its caches and GC workers, on a big machine times
    every company. The gateway's environment (GOMAXPROCS, GOGC, GOMEMLIMIT) wins."""
    os.environ.setdefault("GOMAXPROCS", "2")


def _log_level(name: str) -> int:
    level = logging.getLevelName(str(name).upper())
    return level if isinstance(level, int) else logging.WARNING


class _Session:
    """The child's state shared by the command loop, the command pool, neonize's event
    callback and connect()."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.client: Any = None                    # assigned once neonize is imported
        self.go_error: type = Exception            # neonize.exc.NeonizeError, once imported
        self.ready = threading.Event()             # Neonize() is past its unlocked Go-map writes
        self.connect_done = threading.Event()
        self.stopping = threading.Event()
        self.streaming = False                     # neonize's event loop runs (past the QR phase)
        self.pn_for_lid: PnForLid = lambda _user: ""    # the LID store, once the client exists
        self.go_stopped = False                    # past Stop(): no more calls into the client
        self._send_lock = threading.Lock()
        self._send_lane = threading.Lock()         # one send in Go at a time (whatsmeow holds
                                                   # its messageSendLock anyway): STARTED then
                                                   # means "in Go, nobody ahead of it"
        self._activity = threading.Lock()
        self._in_callback = 0
        self._last_event = time.monotonic()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cmd")

    def emit(self, msg: dict) -> None:
        try:
            with self._send_lock:
                self.conn.send(msg)
        except (OSError, ValueError):              # parent gone: nobody left to serve
            os._exit(wire.EXIT_PARENT_GONE)

    # ---- events (neonize's callback thread) ------------------------------------------------

    def on_event(self, client: Any, ev: Any) -> None:
        """neonize's handler for every FORWARDED event: map it and pass it on, in order."""
        with self._activity:
            self._in_callback += 1
            self.streaming = True                  # only neonize's event loop calls this
        try:                                       # exceptions in ctypes callbacks are only printed
            msg = map_event(ev, self.pn_for_lid)
            if msg is None:
                return
            if msg["type"] == wire.CONNECTED:
                self.ready.set()
                me = getattr(client, "me", None)   # set by the Device event (code 0), sent first
                msg["phone"] = user_digits(me.JID) if me is not None and me.HasField("JID") else ""
            self.emit(msg)
        except Exception:
            log.exception("mapping %s failed", type(ev).__name__)
        finally:
            with self._activity:
                self._in_callback -= 1
                self._last_event = time.monotonic()

    def _quiet_since(self, since: float, seconds: float) -> bool:
        """No event handed over, and none in progress, for `seconds` (counted from `since`
        at the earliest)."""
        with self._activity:
            return (self._in_callback == 0
                    and time.monotonic() - max(self._last_event, since) >= seconds)

    # ---- commands --------------------------------------------------------------------------

    def command_loop(self) -> None:
        while True:
            try:
                req_id, op, args = self.conn.recv()
            except (EOFError, OSError):            # parent went away
                os._exit(wire.EXIT_PARENT_GONE)
            if op == wire.STOP:
                threading.Thread(target=self.stop, args=(float(args.get("grace", 2.0)),),
                                 daemon=True, name="stopper").start()
            elif self.stopping.is_set():
                self._refuse(req_id, "not connected: session stopping")
            else:
                self._pool.submit(self.run_command, req_id, op, args)

    def _refuse(self, req_id: int, text: str) -> None:
        self.emit({"type": wire.REPLY, "req_id": req_id, "ok": False, "code": wire.NOT_CONNECTED,
                   "error": f"NotReady: {text}"})

    def run_command(self, req_id: int, op: str, args: dict) -> None:
        not_after = float(args.get("not_after") or time.time() + float(args.get("wait", 55.0)))
        try:
            # Commands wait until Neonize() has written its Go maps (or connect failed).
            if not self.ready.wait(timeout=max(0.0, not_after - time.time())):
                raise NotReady("not connected: session not ready")
            with self._send_lane if op == wire.SEND else contextlib.nullcontext():
                # Decided under the lane, once: either STARTED (it may reach WhatsApp) or
                # refused (it provably did not).
                if self.connect_done.is_set():
                    raise NotReady("not connected: session ended")
                if self.stopping.is_set():
                    raise NotReady("not connected: session stopping")
                if time.time() > not_after:
                    raise NotReady("not connected: the request waited too long to start")
                self.emit({"type": wire.STARTED, "req_id": req_id})
                result = execute(self.client, op, args)
            self.emit({"type": wire.REPLY, "req_id": req_id, "ok": True, "result": result})
        except Exception as exc:
            code = failure_code(exc, go_error=self.go_error, op=op)
            self.emit({"type": wire.REPLY, "req_id": req_id, "ok": False, "code": code,
                       "error": f"{type(exc).__name__}: {exc}"})

    # ---- stopping --------------------------------------------------------------------------

    def stop(self, grace: float) -> None:
        self.stopping.set()
        if self.ready.is_set() and not self.connect_done.is_set():
            # A clean Disconnect is nicer to WhatsApp, but Stop() can block for a minute
            # (dial) or forever (QR phase): give it `grace`, then leave anyway.
            worker = threading.Thread(target=self._drain_and_stop, args=(grace,), daemon=True,
                                      name="stop")
            worker.start()
            worker.join(grace)
        os._exit(wire.EXIT_STOPPED)

    def _drain_and_stop(self, grace: float) -> None:
        """whatsmeow acks a message to WhatsApp as soon as neonize has queued it (its event
        channel, 100 deep), and Stop() drops that queue: so first Disconnect (no new
        traffic; what is not acked yet WhatsApp sends again), let neonize's loop hand over
        what it holds until it has been quiet for DRAIN_QUIET s, then Stop()."""
        deadline = time.monotonic() + grace - min(0.5, grace / 4)     # leave Stop() a moment
        if self.streaming:
            try:
                self.client.disconnect()
            except Exception:
                log.exception("disconnect before stop failed")
            disconnected = time.monotonic()
            while time.monotonic() < deadline and not self._quiet_since(disconnected, DRAIN_QUIET):
                time.sleep(0.05)
        self.go_stopped = True                      # Stop() removes the client from neonize's map
        self.client.stop()


def _prepare_process(cfg: dict) -> None:
    _die_with_parent(cfg.get("parent_pid"))
    os.setpgrp()                              # a Ctrl+C in the gateway's terminal is the parent's call
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(2, 1)                             # Go's fmt.Println and neonize's print() go to stderr
    os.umask(0o077)                           # sqlite creates the DB (and -wal/-shm) as 0600
    level = _log_level(cfg.get("go_log_level", "WARNING"))
    # Configure logging BEFORE importing neonize: its import-time basicConfig is then a no-op.
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format=f"%(asctime)s wa[{cfg['company_id']}] %(name)s %(levelname)s %(message)s")
    logging.getLogger("neonize.utils.log").setLevel(level)   # read by connect(): the Go log level
    # We send no media: the "ffmpeg not found" warning on every connect is noise.
    logging.getLogger("neonize.utils.ffmpeg").setLevel(logging.ERROR)


def _make_client(cfg: dict, session: _Session, uuid: str) -> Any:
    import neonize.events as nev      # after logging and fd set-up, on purpose
    from neonize.client import NewClient
    from neonize.exc import NeonizeError
    from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps

    session.go_error = NeonizeError

    class _Client(NewClient):
        def _NewClient__onLoginStatus(self, uuid: int, status: int) -> None:  # replaces print()
            session.ready.set()
            session.emit({"type": wire.LOGIN_EVENT,
                          "event": ctypes.string_at(status).decode("utf-8", "replace")})

    db_path = cfg["db_path"]
    for suffix in ("", "-wal", "-shm", "-journal"):   # a store made before the umask rule
        if os.path.exists(db_path + suffix):
            os.chmod(db_path + suffix, 0o600)
    props = DeviceProps(os=cfg.get("device_name") or "Switchboard",
                        platformType=DeviceProps.CHROME)
    client = _Client(db_path, props=props, uuid=uuid)
    client._stop_finalizer.detach()           # a GC'd client must never Stop() a live uuid

    lookup = store_lookup(client)
    # After Stop() neonize has forgotten the client and a look-up would crash the process.
    session.pn_for_lid = lambda lid_user: "" if session.go_stopped else lookup(lid_user)

    def on_event(client_: Any, ev: Any) -> None:   # a plain function: neonize holds methods weakly
        session.on_event(client_, ev)

    for name in FORWARDED:
        client.event(getattr(nev, name))(on_event)

    def on_qr(_client: Any, data: bytes) -> None:    # live QR codes (QREv is buffered until paired)
        session.ready.set()
        session.emit({"type": wire.QR, "code": data.decode("utf-8", "replace")})

    client.event.qr(on_qr)
    return client


def child_main(cfg: dict, conn: Any) -> None:
    """Entry point of the child process. Never returns: ends with os._exit."""
    _prepare_process(cfg)
    session = _Session(conn)
    # Started before the slow neonize import so that an early "stop" is honoured at once;
    # other commands wait in run_command until `ready`, which needs the client.
    threading.Thread(target=session.command_loop, daemon=True, name="commands").start()
    uuid = f"{cfg['company_id']}#{cfg.get('generation', 0)}#{secrets.token_hex(4)}"   # unique per child
    _go_runtime_defaults()
    server = _forkserver()
    if server is not None:
        server.finish_neonize_import()        # runs neonize/__init__: loads Go, here
    session.client = client = _make_client(cfg, session, uuid)
    started = cfg.pop("started_signal", None)
    if started is not None:
        started.close()                       # start-up over: the spawner may start the next one

    from neonize._binder import ProxySettings
    proxy = ProxySettings(proxy_address=cfg["proxy"]) if cfg.get("proxy") else None
    session.emit({"type": wire.CONNECTING, "pid": os.getpid(), "uuid": uuid})
    code = wire.EXIT_STOPPED
    try:
        client.connect(proxy)                 # blocks until stop(); events come on its worker
        result: dict = {"type": wire.STOPPED}
    except BaseException as exc:              # NeonizeError: dial failed, bad DB, ...
        result = {"type": wire.CONNECT_FAILED, "error": f"{type(exc).__name__}: {exc}"}
        code = wire.EXIT_CONNECT_FAILED
    session.connect_done.set()
    session.ready.set()                       # held commands now fail fast
    if not session.stopping.is_set():
        session.emit(result)
    sys.stderr.flush()
    os._exit(code)                            # don't wait for neonize's non-daemon threads
