"""Pure policies: backoff delays, the sliding-window limiter, phone and id validation."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.phone import (InvalidInput, jid_to_phone, normalize_phone, phone_to_jid,
                                      validate_company_id)
from switchboard.actors.ratelimit import RateLimit, RateLimited, SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_exponentially_then_caps():
    policy = BackoffPolicy(base=5, factor=2, cap=60, jitter=0)
    assert [policy.delay(n) for n in range(6)] == [5, 10, 20, 40, 60, 60]
    assert policy.delay(10_000) == 60


@given(attempt=st.integers(min_value=0, max_value=200), seed=st.integers())
def test_backoff_jitter_stays_within_the_cap_and_the_jitter_band(attempt, seed):
    policy = BackoffPolicy(base=5, factor=2, cap=60, jitter=0.2)
    raw = min(60, 5 * 2 ** min(attempt, 64))
    delay = policy.delay(attempt, random.Random(seed))
    assert raw * 0.8 <= delay <= raw <= 60


def test_backoff_jitter_spreads_a_herd():
    policy = BackoffPolicy(base=5, jitter=0.2)
    rng = random.Random(1)
    assert len({round(policy.delay(3, rng), 6) for _ in range(50)}) > 40


def test_backoff_worst_case_total():
    assert BackoffPolicy(base=1, factor=2, cap=4, max_attempts=4).worst_case_total() == 1 + 2 + 4 + 4


def test_limiter_refuses_with_exact_retry_after():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(max_messages=3, window=60, per_recipient_max=10), clock)
    limiter.acquire("a")
    clock.now += 10
    limiter.acquire("b")
    clock.now += 10
    limiter.acquire("c")
    clock.now += 5
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("d")
    assert refused.value.retry_after_ms == 35_000 and refused.value.scope == "company"
    clock.now += 35                                   # the first send leaves the window
    limiter.acquire("d")


def test_limiter_per_recipient():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(max_messages=100, window=10, per_recipient_max=2), clock)
    limiter.acquire("a")
    clock.now += 1
    limiter.acquire("a")
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("a")
    assert refused.value.scope == "recipient" and refused.value.retry_after_ms == 9_000
    limiter.acquire("b")                              # other recipients are unaffected


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=5), st.sampled_from("abc")), max_size=200))
def test_limiter_never_allows_more_than_the_limit_in_any_window(steps):
    clock = FakeClock()
    limit = RateLimit(max_messages=5, window=10, per_recipient_max=3)
    limiter = SlidingWindowLimiter(limit, clock)
    accepted: list[tuple[float, str]] = []
    for advance, recipient in steps:
        clock.now += advance
        try:
            limiter.acquire(recipient)
        except RateLimited as refused:
            assert refused.retry_after_ms > 0
            continue
        accepted.append((clock.now, recipient))
        in_window = [(t, r) for t, r in accepted if t > clock.now - limit.window]
        assert len(in_window) <= limit.max_messages
        assert sum(1 for _, r in in_window if r == recipient) <= limit.per_recipient_max


@pytest.mark.parametrize("raw, digits", [
    ("79001234567", "79001234567"), ("+7 900 123-45-67", "79001234567"), ("+7 (900) 123 45 67", "79001234567"),
    ("79001234567@s.whatsapp.net", "79001234567"), ("79001234567:12@s.whatsapp.net", "79001234567"),
    ("1234567", "1234567"), ("123456789012345", "123456789012345"),
])
def test_phone_normalisation(raw, digits):
    assert normalize_phone(raw) == digits
    assert phone_to_jid(raw) == f"{digits}@s.whatsapp.net"


@pytest.mark.parametrize("raw", ["", " ", "123456", "1234567890123456", "7900abc4567", "120363@g.us",
                                 "foo@s.whatsapp.net", None, 79001234567, "+-()"])
def test_invalid_phones(raw):
    with pytest.raises(InvalidInput):
        normalize_phone(raw)


def test_jid_to_phone_strips_the_device():
    assert jid_to_phone("79001234567:3@s.whatsapp.net") == "79001234567"


@pytest.mark.parametrize("good", ["962302", "a", "A_b-9", "x" * 50])
def test_valid_company_ids(good):
    assert validate_company_id(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 51, "../x", "a/b", "a b", "a.b", "é", None, 962302, "a\n"])
def test_invalid_company_ids_are_rejected_not_rewritten(bad):
    with pytest.raises(InvalidInput):
        validate_company_id(bad)
