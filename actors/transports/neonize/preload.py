"""Warming the fork server: warm() (run by importing `warm_forkserver`, which only the
fork server does, see spawner.py) imports the pure-Python side of neonize once, so that every child forked from
the server shares it copy-on-write instead of importing its own copy (about 30 MiB each).

What is NOT imported here, on purpose:
  * neonize._binder (and neonize.client, which imports it): loading the Go library starts
    the Go runtime, and a process that has started it must never fork (the child's Go
    calls hang). Each child loads it itself, after the fork.
  * neonize.utils (any submodule runs its __init__, which imports utils.log): it starts
    a thread at import, and threads do not survive a fork.
  * neonize/__init__.py itself, which imports neonize.client. The package is registered
    without running its __init__ (the submodules below import fine under it);
    finish_neonize_import() runs it in the child.

After the imports the server checks that it is still a single thread and has not mapped
the Go library, and freezes the garbage collector's view of everything imported so far
(gc.freeze), so that a child's collections never write to those shared pages. If a check
fails the server refuses to serve (the spawner then falls back to "spawn").

Children find `FORKSERVER_PID` here: the parent that PR_SET_PDEATHSIG refers to.
"""
from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
import threading

FORKSERVER_PID: int | None = None           # set when this process is a warmed fork server
WARM_ERROR: str | None = None               # why warming failed (the server then refuses)

# Standard and third-party modules neonize.client and its helpers import (measured: sys.modules after
# `import neonize.client`), and neonize's own modules that load neither Go nor a thread.
_LIBRARIES = (
    "asyncio", "concurrent.futures.process", "multiprocessing.queues", "shlex", "ctypes",
    "google.protobuf.message", "google.protobuf.internal.containers", "google.protobuf.descriptor_pool",
    "google.protobuf.symbol_database", "google.protobuf.json_format",
    "magic", "segno", "phonenumbers", "PIL.Image", "PIL.ImageSequence",
    "linkpreview", "requests", "httpx", "tqdm", "bs4",
)
_NEONIZE = (
    "neonize.exc", "neonize.const", "neonize.types", "neonize.events",
    "neonize.proto.Neonize_pb2",
    "neonize.proto.waE2E.WAWebProtobufsE2E_pb2",
    "neonize.proto.waCommon.WACommon_pb2",
    "neonize.proto.waAICommon.WAWebProtobufsAICommon_pb2",
    "neonize.proto.waAICommonDeprecated.WAAICommonDeprecated_pb2",
    "neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2",
    "neonize.proto.waConsumerApplication.WAConsumerApplication_pb2",
    "neonize.proto.waMsgApplication.WAMsgApplication_pb2",
)
# Our own child-side modules (they import neonize lazily, inside functions).
_OURS = ("child", "child_commands", "mapping", "wire")

_GO_LIBRARY = "neonize-"                    # neonize-linux-amd64.so and its siblings


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _go_loaded() -> bool:
    if "neonize._binder" in sys.modules:
        return True
    try:
        with open("/proc/self/maps") as maps:
            return any(_GO_LIBRARY in line and ".so" in line for line in maps)
    except OSError:
        return False


def _register_neonize_package() -> None:
    """Put the neonize package in sys.modules without running its __init__."""
    if "neonize" in sys.modules:
        return
    spec = importlib.util.find_spec("neonize")
    if spec is None or spec.loader is None:
        raise ImportError("neonize is not installed")
    package = importlib.util.module_from_spec(spec)
    package.__switchboard_unfinished__ = True        # type: ignore[attr-defined]
    sys.modules["neonize"] = package


def finish_neonize_import() -> None:
    """In a child: run neonize/__init__.py in the package registered by the fork server
    (it imports neonize.client, which loads the Go library: here, after the fork).
    Does nothing if neonize was imported normally."""
    package = sys.modules.get("neonize")
    if package is None or not getattr(package, "__switchboard_unfinished__", False):
        return
    del package.__switchboard_unfinished__
    package.__spec__.loader.exec_module(package)      # type: ignore[union-attr]


def warm() -> None:
    """In the fork server, before it forks anything: see the module's docstring."""
    global FORKSERVER_PID, WARM_ERROR
    try:
        os.setpgrp()            # a Ctrl+C or a signal to the gateway's group is not for us
        _register_neonize_package()
        for name in (*_LIBRARIES, *_NEONIZE):
            importlib.import_module(name)
        for name in _OURS:
            importlib.import_module(f"{__package__}.{name}")
    except Exception as exc:                          # noqa: BLE001 - reported, and we refuse
        WARM_ERROR = f"warming failed: {type(exc).__name__}: {exc}"
    if WARM_ERROR is None and _go_loaded():
        WARM_ERROR = "the Go library was loaded while warming"
    if WARM_ERROR is None and _threads() != 1:
        WARM_ERROR = f"{_threads()} threads after warming (a fork server must have one)"
    if WARM_ERROR is not None:
        print(f"switchboard fork server: {WARM_ERROR}; refusing to fork", file=sys.stderr, flush=True)
        os._exit(3)             # the gateway sees the server gone and falls back to spawn
    gc.collect()
    gc.freeze()                 # children's collections never touch the shared objects
    FORKSERVER_PID = os.getpid()
