"""Transports: the two implementations of the Connection contract (actors/connection.py).

- `simulated`: a stand-in for WhatsApp's servers, for tests, benchmarks, chaos runs and
  the offline demo; in-process, or `switchboard simulator` reached over sockets.
- `neonize`: the real WhatsApp link, one neonize child process per company.

Neither is an actor: a SessionActor owns one connection and receives its events as
messages. `proxy` holds the proxy URL check that configuration and transports share.
"""
