"""The real WhatsApp transport: one neonize (whatsmeow) client per company, each in its
own child process. The gateway process imports this package but never neonize itself:
only `child` and `mapping` touch neonize, and only inside the spawned child.

Modules, one reason to change each:
  wire            the pipe's vocabulary: message types, commands, error codes (both sides)
  spawner         starting children with multiprocessing "spawn" from one long-lived thread
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
