"""Whoop Developer API v2 client. (Skeleton: capabilities, OAuth and limits; the client comes next.)"""

from wearsync.models import DataType
from wearsync.providers.core import Provider
from wearsync.providers.ratelimit import RateLimit

PROVIDER = Provider(
    name="whoop",
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="pull",
    token_path="/oauth/oauth2/token",
    client_auth="body",
    refresh_params={"scope": "offline"},  # without it Whoop issues no new refresh token
    rate_limits=(RateLimit(100, 60), RateLimit(10_000, 86400)),
)
