"""Actors: the per-company SessionActor and what it owns (connection, limiter, backoff, outbox)."""
