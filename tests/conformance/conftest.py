"""Conformance tests: the simulators record every exchange, for the providers' specs to judge."""

from collections.abc import Iterator

import pytest

from wearsync.sim.common import SimState


@pytest.fixture
def recording(sim_state: SimState) -> Iterator[SimState]:
    """The simulator, keeping each request's headers and body and its answer in its request log."""
    sim_state.record_exchanges = True
    yield sim_state
    sim_state.record_exchanges = False
