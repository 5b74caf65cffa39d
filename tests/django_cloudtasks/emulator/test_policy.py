"""The retry backoff and the token bucket, as pure functions of time."""

from __future__ import annotations

import pytest

from django_cloudtasks.emulator.policy import RetryPolicy, TokenBucket, burst_size_for


def policy(**overrides: float) -> RetryPolicy:
    values = {
        "max_attempts": 100,
        "max_retry_duration": 0.0,
        "min_backoff": 10.0,
        "max_backoff": 300.0,
        "max_doublings": 3,
    }
    values.update(overrides)
    return RetryPolicy(**values)  # type: ignore[arg-type]


def test_the_backoff_doubles_then_grows_linearly_then_caps_like_the_documented_example():
    # "10s, 20s, 40s, 80s, 160s, 240s, 300s, 300s" (Cloud Tasks RetryConfig docs)
    delays = [policy().backoff(k) for k in range(1, 9)]
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]


def test_the_default_backoff_starts_at_a_tenth_of_a_second():
    default = policy(min_backoff=0.1, max_backoff=3600, max_doublings=16)
    assert [default.backoff(k) for k in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    assert default.backoff(100) == 3600


def test_max_attempts_ends_the_retries():
    assert not policy(max_attempts=3).exhausted(2, 1000)
    assert policy(max_attempts=3).exhausted(3, 0)


def test_unlimited_attempts_never_end_without_a_retry_duration():
    assert not policy(max_attempts=-1).exhausted(10_000, 10**9)


def test_with_a_retry_duration_both_limits_must_be_reached():
    limited = policy(max_attempts=3, max_retry_duration=60)
    assert not limited.exhausted(5, 30)
    assert not limited.exhausted(2, 90)
    assert limited.exhausted(3, 60)
    assert policy(max_attempts=-1, max_retry_duration=60).exhausted(1, 61)


def test_the_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=5, burst=5, now=0.0)
    assert sum(bucket.try_take(0.0) for _ in range(10)) == 5
    assert bucket.next_token_at(0.0) == pytest.approx(0.2)
    assert not bucket.try_take(0.1)
    assert bucket.try_take(0.2)


def test_the_burst_follows_the_rate_up_to_one_hundred():
    assert [burst_size_for(r) for r in (0.5, 5, 500)] == [1, 5, 100]
