"""Ownership: one live connection per company, even against a lock held elsewhere."""
from __future__ import annotations

import fcntl
import os

from .support.sessions import link

def test_held_owner_lock_is_waited_for_not_fatal(board, waiter):
    link(board, waiter, "acme")
    board.session("acme").stop().get(timeout=5)
    fd = os.open(board.data_dir / "acme" / "owner.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                      # a crashed actor still closing, say
    try:
        board.session("acme").start().get(timeout=5)
        assert "owner.lock" in waiter.state("acme", "reconnecting")["lastError"]
    finally:
        os.close(fd)
    waiter.state("acme", "connected")
    assert board.network.max_seen("acme") == 1
