"""Starting neonize children: forked from a warm fork server, from one long-lived thread.

Never fork a process that has loaded neonize's Go library: a forked Go runtime hangs. The
gateway never loads it (it never imports neonize at all), and neither does the fork
server: multiprocessing's "forkserver" is a fresh interpreter, started once, that imports
only the pure-Python side of neonize (preload.py, by importing warm_forkserver) and then
forks one child per start. Each child loads the Go library itself, after the fork. That
import is most of a child's memory (about 30 of 44 MiB, measured): forked, it is shared
copy-on-write by every child instead of paid by each (scripts/bench_neonize).

If the fork server cannot be used (it refused to warm up, or died while starting), the
spawner falls back to "spawn" for the rest of the process: a fresh interpreter per child,
which imports everything itself. configure(start_method="spawn") chooses that from the
start (SWITCHBOARD_NEONIZE_START=spawn; the benchmark uses it to measure both).

The child target is `child_entry`, which imports the neonize side by name, so the gateway
process never has to import it.

Start-up at scale (a gateway restoring 1,000 companies): starts run one at a time on one
thread, and at most `max_starting` children (configure(); SWITCHBOARD_NEONIZE_MAX_STARTING;
default the number of CPUs, at least 2) may be between their fork and the end of their start-up
(Go loaded, client made, about to dial) at once; the next start waits for a slot, or for
STARTING_DEADLINE seconds. A child says its start-up is over by closing the write end of
a pipe it got in its config ("started_signal"); its exit closes it too. So a restore is
a steady stream at the machine's pace instead of a herd of children loading Go at once.

Nobody waits for a start: spawn() queues it and returns a future. A start takes 0.3-0.5 s
and they run one after another, so with fifty companies restored at once a caller that
waited would wait tens of seconds.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import wait as _wait_ready
from typing import Any, Callable

log = logging.getLogger("switchboard.neonize")

_SPAWN = multiprocessing.get_context("spawn")
_FORKSERVER = multiprocessing.get_context("forkserver")
WARM_MODULE = f"{__package__}.warm_forkserver"
STARTING_DEADLINE = 10.0         # seconds a start may hold its slot without saying it is over
STARTED_SIGNAL = "started_signal"


def default_max_starting() -> int:
    return max(2, os.cpu_count() or 1)


ChildTarget = Callable[[dict, Any], None]


def child_entry(cfg: dict, conn: Any) -> None:
    """Runs in the child. Imports the neonize side by name so the parent never has to."""
    module = importlib.import_module(f"{__package__}.child")
    module.child_main(cfg, conn)


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
        self._ctx: Any = None                       # chosen on the spawner thread, at first start
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._starting: list[tuple[Any, float]] = []   # (started_signal reader, deadline)
        self.limit = default_max_starting()
        self.method = "forkserver"                      # what configure() asked for

    def submit(self, target: ChildTarget, cfg: dict, name: str) -> Future:
        with self._lock:
            if self._thread is None:
                _install_lean_preparation(self._local)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="neonize-spawner")
                self._thread.start()
        started: Future = Future()
        self._queue.put((target, cfg, name, started))
        return started

    def _run(self) -> None:
        while True:
            target, cfg, name, started = self._queue.get()
            if not started.set_running_or_notify_cancel():
                continue                          # cancelled while queued: never started
            try:
                result = self._start(target, cfg, name)
            except BaseException as exc:          # noqa: BLE001 - handed to the caller
                started.set_exception(exc)
            else:
                started.set_result(result)        # runs the caller's callbacks, here

    def _start(self, target: ChildTarget, cfg: dict, name: str) -> tuple[Any, Any]:
        if self._ctx is None:
            self._ctx = _choose_context(self.method)
        self._wait_for_slot()
        if self._ctx is _FORKSERVER:
            # A failure may be passing (out of fds): try again once (a dead server is
            # restarted by multiprocessing); twice in a row means the server is unusable.
            for _ in range(2):
                try:
                    return self._start_with(_FORKSERVER, target, cfg, name)
                except (OSError, EOFError) as exc:  # the server is gone or refused to warm up
                    failure = exc
            log.warning("neonize fork server unusable (%s: %s); starting children with "
                        "spawn from now on", type(failure).__name__, failure)
            self._ctx = _SPAWN
        return self._start_with(self._ctx, target, cfg, name)

    def _start_with(self, ctx: Any, target: ChildTarget, cfg: dict, name: str) -> tuple[Any, Any]:
        parent_end, child_end = ctx.Pipe(duplex=True)
        started_r, started_w = ctx.Pipe(duplex=False)
        self._local.lean = getattr(target, "__module__", "__main__") != "__main__"
        try:
            proc = ctx.Process(target=target, args=({**cfg, STARTED_SIGNAL: started_w}, child_end),
                               name=name, daemon=True)
            proc.start()
        except BaseException:
            parent_end.close()
            started_r.close()
            raise
        finally:
            self._local.lean = False
            child_end.close()       # else the parent keeps the pipe open: no EOF at the child's exit
            started_w.close()       # the same for the start-up signal
        self._starting.append((started_r, time.monotonic() + STARTING_DEADLINE))
        return proc, parent_end

    def _wait_for_slot(self) -> None:
        """Block (this thread only) until fewer than `limit` children are starting up."""
        while True:
            now = time.monotonic()
            still = []
            for reader, deadline in self._starting:
                if deadline <= now or _wait_ready([reader], 0):   # over (EOF), or out of time
                    reader.close()
                else:
                    still.append((reader, deadline))
            self._starting = still
            if len(still) < self.limit:
                return
            _wait_ready([reader for reader, _ in still], min(d for _, d in still) - now)

    @property
    def starting(self) -> int:
        """Children started whose start-up is not over yet (as last counted)."""
        return len(self._starting)

    @property
    def start_method(self) -> str | None:
        """"forkserver" or "spawn" once the first child has been started, else None."""
        return None if self._ctx is None else self._ctx.get_start_method()


def _choose_context(method: str) -> Any:
    """The fork server unless told otherwise (method "spawn") or unavailable.

    The server is multiprocessing's single one for this process; its preload list is set
    here, before it is first started (by the first Process.start()). The forkserver's
    children are not children of the gateway: PR_SET_PDEATHSIG in a child refers to the
    server, which dies with the gateway (see preload.py), so the chain still holds."""
    if method == "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return _SPAWN
    from multiprocessing import forkserver
    forkserver.set_forkserver_preload([WARM_MODULE])
    return _FORKSERVER


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


START_METHODS = ("forkserver", "spawn")


def configure(*, start_method: str | None = None, max_starting: int | None = None) -> None:
    """Process-wide settings of the one spawner (the transport passes the gateway's
    configuration). `start_method` counts only before the first child is started."""
    if start_method is not None:
        if start_method not in START_METHODS:
            raise ValueError(f"start method must be forkserver or spawn, not {start_method!r}")
        _spawner.method = start_method
    if max_starting is not None:
        _spawner.limit = max_starting if max_starting > 0 else default_max_starting()


def start_method() -> str | None:
    """How children are started ("forkserver" or "spawn"); None before the first start."""
    return _spawner.start_method


def spawn(target: ChildTarget, cfg: dict, name: str) -> Future:
    """Queue the start of `target(cfg, pipe)` in a new process and return at once.

    The future resolves on the spawner thread to (process, the parent's pipe end), or fails
    with why it could not start; its done-callbacks run there too, so they must be quick
    (every other spawn waits behind them). Cancelling it while it is still queued means
    no process is ever started. `target` must be importable by name in a spawned process
    (not defined in __main__)."""
    return _spawner.submit(target, cfg, name)
