"""Each person's share of Planfix requests: one person's commands and button presses cannot eat the
rate the feed needs. A token bucket per Telegram user (aiolimiter): `per_minute` requests, refilled evenly. Reads
(a card, Refresh, a list re-read while the feed is stale) take from it today; a later write (posting a comment)
takes from the same bucket, so nobody gets more Planfix time by mixing them."""

from __future__ import annotations

from aiolimiter import AsyncLimiter


class Allowance:
    def __init__(self, per_minute: int, *, period: float = 60.0) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.period = period
        self._buckets: dict[int, AsyncLimiter] = {}

    async def take(self, user_id: int, cost: int = 1) -> bool:
        """Take `cost` requests from the person's allowance now, or return False (nothing taken) if it is used up.
        Never waits: a person over their allowance is answered from the bot's copy instead."""
        bucket = self._buckets.setdefault(user_id, AsyncLimiter(self.per_minute, self.period))
        if not bucket.has_capacity(cost):
            return False
        await bucket.acquire(cost)  # immediate: there is capacity
        return True
