"""Per-client request quotas for the Send API: token buckets. Pure (time is passed in).

Each client has a bucket of ``burst`` tokens refilled at ``per_second``; a request takes one.
With none left, :meth:`Quotas.take` answers how long until one is: the API's ``Retry-After``.
The buckets are per worker: with *n* workers behind a load balancer, a client's rate is up to
*n* times its setting (document it when you size ``rate_limit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_LIMIT", "Quotas", "RateLimit"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int


DEFAULT_LIMIT: Final = RateLimit(per_second=100.0, burst=200)


class Quotas:
    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._max_keys = max_keys

    def take(self, key: str, limit: RateLimit, now: float) -> float:
        """Take one token from ``key``'s bucket: 0.0 when there was one, else the seconds until
        there will be one (and nothing is taken)."""
        tokens, at = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(0.0, now - at) * limit.per_second)
        if tokens >= 1.0:
            self._remember(key, tokens - 1.0, now)
            return 0.0
        self._remember(key, tokens, now)
        return (1.0 - tokens) / limit.per_second

    def _remember(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._buckets.clear()  # bounded memory; a cleared bucket starts full, which is lenient
        self._buckets[key] = (tokens, now)
