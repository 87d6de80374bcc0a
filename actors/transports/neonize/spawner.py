"""Starting neonize children: multiprocessing "spawn" from one long-lived thread.

Never fork: a forked Go runtime hangs. The child target is `child_entry`, which imports
the neonize side by name, so the gateway process never has to import it.
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


def spawn(target: ChildTarget, cfg: dict, name: str) -> tuple[Any, Any]:
    """Start `target(cfg, pipe)` in a new process; returns (process, the parent's pipe end).
    `target` must be importable by name in a spawned process (not defined in __main__)."""
    parent_end, child_end = _CTX.Pipe(duplex=True)
    try:
        proc = _CTX.Process(target=target, args=(cfg, child_end), name=name, daemon=True)
        _spawner.start(proc)
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()           # else the parent keeps the pipe open: no EOF at the child's exit
    return proc, parent_end
