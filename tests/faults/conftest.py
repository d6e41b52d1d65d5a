"""Fixtures of the fault tests."""

from collections.abc import AsyncIterator

import pytest

from tests.faults.servers import OwnRedis


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    """A Redis of the test's own, started, for the test to break."""
    redis = OwnRedis()
    await redis.start()
    yield redis
    await redis.stop()
