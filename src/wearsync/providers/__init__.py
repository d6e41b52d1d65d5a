"""The providers: each is data (what it supports, how data arrives, limits) plus client functions.

The capability table of the contract lives here for all five, so the API answers 404 and 501
correctly even for a provider whose client is not written yet.
"""

from wearsync.models import DataType
from wearsync.providers import suunto
from wearsync.providers.core import Provider, RateLimit

_BOTH = frozenset({DataType.WORKOUTS, DataType.DATA_247})
_WORKOUTS_ONLY = frozenset({DataType.WORKOUTS})

PROVIDERS: dict[str, Provider] = {
    "garmin": Provider("garmin", _BOTH, delivery="webhook", rate_limits=(RateLimit(100, 60),)),
    "strava": Provider("strava", _WORKOUTS_ONLY, delivery="pull",
                       rate_limits=(RateLimit(100, 15 * 60), RateLimit(1000, 86400))),
    "polar": Provider("polar", _WORKOUTS_ONLY, delivery="pull"),
    "suunto": suunto.PROVIDER,
    "whoop": Provider("whoop", _BOTH, delivery="pull", rate_limits=(RateLimit(100, 60), RateLimit(10_000, 86400))),
}  # fmt: skip
