"""Rate and retry policies of a queue, as plain numbers: a token bucket and a backoff."""

from __future__ import annotations

import math
from dataclasses import dataclass


def burst_size_for(rate: float) -> int:
    """The bucket size the service picks for ``rate`` dispatches per second.

    The reference says the service picks ``max_burst_size`` from the rate (output only,
    reset on every UpdateQueue, at most 500) without giving the formula; production
    answers 100 for the default 500/s. The emulator uses the rate rounded up, between
    1 and 100, so a slow queue stays slow.
    """
    return max(1, min(100, math.ceil(rate)))


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens a second, holding at most ``burst``.

    Not thread-safe by itself: the emulator's state lock guards it.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._refilled_at = now

    def reconfigure(self, rate: float, burst: int, now: float) -> None:
        """Change the rate and size, keeping the tokens already earned (capped)."""
        self.refill(now)
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens, float(burst))

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill."""
        elapsed = now - self._refilled_at
        if elapsed > 0:
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self._refilled_at = now

    def try_take(self, now: float) -> bool:
        """Take one token if there is one; return whether it was taken."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def next_token_at(self, now: float) -> float:
        """When the next whole token will be available."""
        self.refill(now)
        if self.tokens >= 1.0:
            return now
        return now + (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class RetryPolicy:
    """A queue's RetryConfig in seconds; ``max_retry_duration`` 0 means no time limit."""

    max_attempts: int
    max_retry_duration: float
    min_backoff: float
    max_backoff: float
    max_doublings: int

    def backoff(self, retry_number: int) -> float:
        """The delay before retry number ``retry_number`` (1 for the first retry).

        The delay starts at ``min_backoff``, doubles ``max_doublings`` times, then grows
        linearly by ``2**max_doublings * min_backoff``, never above ``max_backoff``.
        """
        k = max(1, retry_number)
        if k - 1 <= self.max_doublings:
            delay = self.min_backoff * 2 ** (k - 1)
        else:
            step = self.min_backoff * 2**self.max_doublings
            delay = step * (k - self.max_doublings)
        return min(delay, self.max_backoff)

    def exhausted(self, attempts: int, seconds_since_first_attempt: float) -> bool:
        """Whether a task that failed ``attempts`` times must be given up.

        As in the service, both limits must be reached when both are set; with unlimited
        attempts (-1) only ``max_retry_duration`` can end the retries.
        """
        duration_set = self.max_retry_duration > 0
        duration_reached = seconds_since_first_attempt >= self.max_retry_duration
        if self.max_attempts < 0:
            return duration_set and duration_reached
        attempts_reached = attempts >= self.max_attempts
        return attempts_reached and (not duration_set or duration_reached)


#: The longest ``Retry-After`` the emulator waits for (a larger one is capped).
MAX_RETRY_AFTER = 3600.0


def throttled_delay(backoff: float, retry_after: float | None, policy: RetryPolicy) -> float:
    """The delay before retrying an attempt answered 429 or 503.

    The reference: on these answers Cloud Tasks "will use a higher backoff rate" and
    considers the ``Retry-After`` header. The emulator doubles the queue's backoff
    (within ``max_backoff``) and waits at least what ``Retry-After`` asked for.
    """
    delay = min(2 * backoff, policy.max_backoff)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay
