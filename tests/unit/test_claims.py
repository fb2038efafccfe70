"""streams.web.claims: concurrent requests with one idempotency key wait for the first one."""

from __future__ import annotations

import asyncio

import pytest

from streams.web.claims import Claims, KeyOutcome, Lease

OUTCOME = KeyOutcome("session-1", "fp")


async def test_followers_get_the_leaders_outcome() -> None:
    claims = Claims()
    lease = await claims.claim("k", 0.0)
    assert isinstance(lease, Lease)
    followers = [asyncio.create_task(claims.claim("k", 0.0)) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(f.done() for f in followers), "they wait for the leader"
    lease.settle(OUTCOME, 1.0, keep=True)
    assert await asyncio.gather(*followers) == [OUTCOME] * 5
    assert await claims.claim("k", 2.0) == OUTCOME, "kept for the window"


async def test_a_kept_outcome_expires_after_the_window() -> None:
    claims = Claims(window=10.0)
    lease = await claims.claim("k", 0.0)
    assert isinstance(lease, Lease)
    lease.settle(OUTCOME, 0.0, keep=True)
    assert isinstance(await claims.claim("k", 11.0), Lease)


@pytest.mark.parametrize("outcome", [None, OUTCOME])
async def test_a_failed_or_unkept_outcome_leaves_no_trace(outcome: KeyOutcome | None) -> None:
    claims = Claims()
    lease = await claims.claim("k", 0.0)
    assert isinstance(lease, Lease)
    follower = asyncio.create_task(claims.claim("k", 0.0))
    await asyncio.sleep(0)
    lease.settle(outcome, 0.0, keep=False)
    result = await follower
    if outcome is None:
        assert isinstance(result, Lease), "the follower decides anew, as the new leader"
    else:
        assert result == outcome
        assert isinstance(await claims.claim("k", 0.0), Lease)


async def test_the_oldest_keys_are_forgotten_beyond_the_capacity() -> None:
    claims = Claims(capacity=2)
    first = await claims.claim("a", 0.0)
    assert isinstance(first, Lease)
    follower = asyncio.create_task(claims.claim("a", 0.0))
    await asyncio.sleep(0)
    await claims.claim("b", 0.0)
    await claims.claim("c", 0.0)  # "a" is forgotten: its follower decides itself
    leader = await follower
    assert isinstance(leader, Lease) and leader is not first
    first.settle(OUTCOME, 0.0, keep=True)  # a late settle of a forgotten lease changes nothing
    assert not leader.outcome.done()
