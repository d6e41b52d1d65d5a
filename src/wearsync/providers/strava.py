"""Strava API v3 client. (Skeleton: capabilities, OAuth and limits; the client comes next.)"""

from wearsync.models import DataType
from wearsync.providers.core import Provider
from wearsync.providers.ratelimit import RateLimit

PROVIDER = Provider(
    name="strava",
    supports=frozenset({DataType.WORKOUTS}),
    delivery="pull",
    token_path="/oauth/token",
    client_auth="body",
    rate_limits=(RateLimit(100, 15 * 60), RateLimit(1000, 86400)),
)
