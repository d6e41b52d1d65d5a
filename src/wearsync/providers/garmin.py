"""Garmin Health API client. (Skeleton: capabilities, OAuth and limits; the client comes next.)"""

from wearsync.models import DataType
from wearsync.providers.core import Provider
from wearsync.providers.ratelimit import RateLimit

PROVIDER = Provider(
    name="garmin",
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="webhook",
    token_path="/di-oauth2-service/oauth/token",
    client_auth="body",
    rate_limits=(RateLimit(100, 60),),  # evaluation-tier figure (unconfirmed)
)
