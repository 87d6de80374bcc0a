"""The real WhatsApp transport: one neonize (whatsmeow) client per company, each in its
own child process. The gateway process imports this package but never neonize itself:
only `child` and `mapping` touch neonize, and only inside the child (the fork server
imports neonize's pure-Python modules, never its Go library: see preload.py).

Modules, one reason to change each:
  wire            the pipe's vocabulary: message types, commands, error codes (both sides)
  spawner         starting children from one long-lived thread: forked from a warm fork
                  server (or spawned), at most max_starting starting up at once
  preload         (fork server) the pure-Python side of neonize, imported once, never Go
  warm_forkserver (fork server) imported by it only: runs preload.warm()
  link            the parent's end of the pipe: requests, replies, timeouts, the reader thread
  process         ending and reaping a child without ever signalling a reused pid
  translate       child dicts -> Connection events, one small handler per wire type
  watchdogs       the shared timer thread; connect deadline and QR stall per connection
  connection      NeonizeConnection: one link, composing the above; its lifecycle
  commands        NeonizeConnection's commands (send, pair_phone, logout) and their refusals
  child_events    NeonizeConnection's reactions to the child's messages, exit and silences
  transport       NeonizeTransport: makes connections, ends them all on close
  mapping         (child side) neonize protobuf events -> wire dicts
  child           (child side) the command loop around one neonize client
  child_commands  (child side) what each command does, which code a failure gets
"""
from ..proxy import validate_proxy
from .connection import DB_FILES, DB_NAME, NeonizeConnection
from .transport import NeonizeTransport

__all__ = ["DB_FILES", "DB_NAME", "NeonizeConnection", "NeonizeTransport", "validate_proxy"]
