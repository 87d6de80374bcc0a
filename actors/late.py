"""What a stopping actor still hears from the connection it is closing.

A Connection may emit until its close future resolves (actors/connection.py), and
whatsmeow acknowledges a message to WhatsApp as soon as it has queued it: WhatsApp will
not send it again. So a session actor that stops (stop, delete, gateway shutdown) keeps
listening, on its own thread in `on_stop`, until its links are gone or `close_wait`
runs out: what was still in its mailbox, and what is told to it after pykka marked it
stopped (those tells fail with ActorDeadError and land here instead). Incoming messages
and receipts still reach the inbound path; send answers still settle the outbox.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from . import messages as m
from .connection import IncomingMessage, Receipt

log = logging.getLogger(__name__)

# What a stopping actor still handles: traffic, send answers, and the closes it waits for.
LATE_KINDS = (m.ConnEvent, m.SendDone, m.ConnClosed)
_ALL_CLOSED = object()


def is_traffic(message: Any) -> bool:
    return isinstance(message, m.ConnEvent) and isinstance(message.event, (IncomingMessage, Receipt))


class LateMail:
    def __init__(self, company_id: str) -> None:
        self._company_id = company_id
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._open = True
        self.lost = 0                  # traffic that came after the wait was over

    def put(self, message: Any) -> None:
        """A message told to the actor after it stopped (any thread)."""
        if not isinstance(message, LATE_KINDS):
            return
        with self._lock:
            if self._open:
                self._queue.put(message)
                return
        if is_traffic(message):
            self.lost += 1
            log.warning("[%s] %s arrived after the session ended and its close wait was over; dropped",
                        self._company_id, type(message.event).__name__)

    def close(self) -> None:
        """Nobody will drain (the actor crashed): what comes later is dropped, and counted."""
        with self._lock:
            self._open = False
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def drain(self, inbox: queue.Queue, closing: list[Future], wait: float, handle: Callable[[Any], None]) -> None:
        """On the actor's own thread (on_stop): hand every late message to `handle`, first
        those still in pykka's `inbox`, then those told since, until every future in
        `closing` resolved or `wait` seconds passed. Later ones are dropped, and counted."""
        self._take_from_mailbox(inbox, handle)
        if closing:
            remaining = [len(closing)]
            lock = threading.Lock()

            def one_closed(_f: Future) -> None:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        self._queue.put(_ALL_CLOSED)
            for future in closing:
                future.add_done_callback(one_closed)
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    message = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if message is _ALL_CLOSED:
                    break
                handle(message)
        with self._lock:
            self._open = False
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                return
            if message is not _ALL_CLOSED:
                handle(message)

    @staticmethod
    def _take_from_mailbox(inbox: queue.Queue, handle: Callable[[Any], None]) -> None:
        """Tells still queued behind the stop: pykka would drop them after on_stop."""
        kept = []
        while True:
            try:
                envelope = inbox.get_nowait()
            except queue.Empty:
                break
            if envelope.reply_to is None and isinstance(envelope.message, LATE_KINDS):
                handle(envelope.message)
            else:
                kept.append(envelope)          # asks: pykka answers them (ActorDeadError)
        for envelope in kept:
            inbox.put(envelope)
