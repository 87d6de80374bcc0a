"""Inbound: the event log is the dedupe, and a message is acknowledged only once it is logged."""
from __future__ import annotations

import dataclasses

from switchboard.actors.connection import IncomingMessage
from switchboard.actors.inbound import NOT_LOGGED, Inbound
from switchboard.supervision.eventlog import EventLog


def incoming(message_id, acks):
    message = IncomingMessage(id=message_id, chat="79001234567@s.whatsapp.net", phone="79001234567", text="hi",
                              timestamp=1.0)
    # a transport that lets the client acknowledge (the simulator service does; whatsmeow acks by itself)
    try:
        return dataclasses.replace(message, ack=lambda: acks.append(message_id))
    except TypeError:           # a contract without the field: the attribute is what Inbound reads
        object.__setattr__(message, "ack", lambda: acks.append(message_id))
        return message


def test_a_message_is_acknowledged_after_it_is_logged_and_a_redelivery_is_dropped(tmp_path):
    log = EventLog(tmp_path)
    order = []
    inbound = Inbound(tmp_path, lambda kind, data: (order.append("logged"), log.append("acme", kind, data))[1])
    acks = []
    assert inbound.message(incoming("A", acks)) is True
    assert inbound.message(incoming("A", acks)) is False       # redelivered: acknowledged again, not logged
    assert acks == ["A", "A"] and inbound.received == 1 and inbound.redelivered == 1
    assert [e.data["id"] for e in _all(log)] == ["A"]
    log.close()


def test_a_message_the_log_could_not_take_is_not_acknowledged(tmp_path):
    acks = []
    inbound = Inbound(tmp_path, lambda kind, data: NOT_LOGGED)
    assert inbound.message(incoming("B", acks)) is False
    assert acks == [] and inbound.received == 0


def _all(log):
    from switchboard.supervision.eventlog import read_all
    return list(read_all(log))
