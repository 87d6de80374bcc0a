"""Starting neonize children: multiprocessing "spawn" from one long-lived thread.

Never fork: a forked Go runtime hangs. The child target is `child_entry`, which imports
the neonize side by name, so the gateway process never has to import it.

Nobody waits for a start: spawn() queues it and returns a future. A start takes 0.3-0.5 s
and they run one after another, so with fifty companies restored at once a caller that
waited would wait tens of seconds.
"""
from __future__ import annotations

import importlib
import multiprocessing
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

_CTX = multiprocessing.get_context("spawn")      # never fork: a forked Go runtime hangs

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
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

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
        parent_end, child_end = _CTX.Pipe(duplex=True)
        self._local.lean = getattr(target, "__module__", "__main__") != "__main__"
        try:
            proc = _CTX.Process(target=target, args=(cfg, child_end), name=name, daemon=True)
            proc.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            self._local.lean = False
            child_end.close()       # else the parent keeps the pipe open: no EOF at the child's exit
        return proc, parent_end


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


def spawn(target: ChildTarget, cfg: dict, name: str) -> Future:
    """Queue the start of `target(cfg, pipe)` in a new process and return at once.

    The future resolves on the spawner thread to (process, the parent's pipe end), or fails
    with why it could not start; its done-callbacks run there too, so they must be quick
    (every other spawn waits behind them). Cancelling it while it is still queued means
    no process is ever started. `target` must be importable by name in a spawned process
    (not defined in __main__)."""
    return _spawner.submit(target, cfg, name)
