"""The simulated WhatsApp: a test double and an offline demo, never a substitute for neonize.

- network.py: the server side (accounts, devices, QR, delivery), shared by both ways of
  running it; faults.py the faults it injects; ledger.py its record of live links;
  store.py its memory on disk; codes.py QR payloads, pairing codes, ids and LIDs;
- connection.py: in-process links (`SimulatedTransport`), for tests and the demo;
- service.py: the network as its own loopback service (`switchboard simulator`), with
  the control API over HTTP and gateway links over sockets (link.py speaks the wire);
- remote.py: the gateway's transport for that service (`serve --simulator-url URL`);
- client.py: a small HTTP client for the service's control API.
"""
from .connection import CREDENTIALS_FILE, SimulatedConnection, SimulatedTransport
from .faults import FAULTS, LOGIN_OUTCOMES
from .network import SimulatedNetwork

__all__ = ["CREDENTIALS_FILE", "FAULTS", "LOGIN_OUTCOMES", "SimulatedConnection", "SimulatedNetwork",
           "SimulatedTransport"]
