"""Rate limits with the `limits` library: in memory, or in Redis (REDIS_URL) when several replicas
of the API or the agent share the counters.

Units (README "Security"):
- token API: one request, counted against the authenticated caller (API key or verified user);
- STT (10/s per user): one recognition stream or batch recognition started;
- TTS (5/s per user): one sentence sent to synthesis; over the limit the sentence waits its turn;
- LLM (2/s per user): one reply to a new user message (a preemptive generation, its rerun for the
  same message and tool follow-ups are the same unit); over the limit the agent says "one moment".

When Redis is unreachable the limits fail open (a warning, at most one a minute): authentication
still holds, and a cache outage must not take the service down.
"""

from __future__ import annotations

import logging
import time

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

logger = logging.getLogger("eloquence.rate_limits")

WARN_EVERY_S = 60.0


def per_second(n: int) -> RateLimitItem:
    return RateLimitItemPerSecond(max(1, n))


def per_minute(n: int) -> RateLimitItem:
    return RateLimitItemPerMinute(max(1, n))


def storage_uri(redis_url: str | None) -> str:
    """`redis://host:6379/0` → the limits library's async Redis URI; None → memory."""
    if not redis_url:
        return "async+memory://"
    scheme = redis_url.split("://", 1)[0]
    if scheme not in ("redis", "rediss", "redis+unix"):
        raise ValueError("REDIS_URL must start with redis://, rediss:// or redis+unix://")
    return "async+" + redis_url


class RateLimits:
    """Moving-window limits, one namespace per use (`api`, `agent`)."""

    def __init__(self, *, redis_url: str | None = None, namespace: str = "eloquence") -> None:
        uri = storage_uri(redis_url)
        kwargs = {"implementation": "redispy", "key_prefix": namespace} if redis_url else {}
        # memory storage schedules its expiry on the running loop: build this inside one
        self.storage: Storage = storage_from_string(uri, wrap_exceptions=True, **kwargs)
        self.backend = "redis" if redis_url else "memory"
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._namespace = namespace
        self._last_warning = 0.0

    async def hit(self, item: RateLimitItem, *identifiers: str) -> float:
        """Count one unit: 0.0 if it is allowed, else the seconds until one would be."""
        try:
            if await self._limiter.hit(item, self._namespace, *identifiers):
                return 0.0
            stats = await self._limiter.get_window_stats(item, self._namespace, *identifiers)
            return max(0.01, stats.reset_time - time.time())
        except StorageError as e:  # the storage is down: fail open, loudly
            now = time.monotonic()
            if now - self._last_warning > WARN_EVERY_S:
                self._last_warning = now
                logger.warning(
                    "rate-limit storage (%s) unavailable, limits not applied: %s",
                    self.backend,
                    type(e.storage_error).__name__,
                )
            return 0.0

    async def aclose(self) -> None:
        if self.backend == "memory":
            await self.storage.reset()
