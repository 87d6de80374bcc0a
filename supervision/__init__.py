"""Supervision: the supervisor actor, the embedding facade, the event log, config and CLI."""
from switchboard.actors.context import SessionSettings

from .board import InboundMessage, SessionHandle, Switchboard

__all__ = ["InboundMessage", "SessionHandle", "SessionSettings", "Switchboard"]
