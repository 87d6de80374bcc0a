"""Sinks: where events go besides the supervisor log.

A sink subscribes to the event bus; the bus calls it on its dispatcher thread for every
event, so a sink only records the event (journal, queue) and does its slow work
(network, disk) on its own thread: one slow sink never holds up another, nor the actors.
Adding a sink is one module here, and one line in the composition root that passes its
factory to `Switchboard(sinks=[...])`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from switchboard.supervision.events import Event


class Sink(Protocol):
    def __call__(self, event: Event) -> None:
        """Take one event; quick, never blocking on the network."""
        ...

    def close(self) -> None:
        """Stop its threads; what is not delivered yet stays recorded for the next start."""
        ...


SinkFactory = Callable[[Path], Sink]      # given the gateway's data directory
