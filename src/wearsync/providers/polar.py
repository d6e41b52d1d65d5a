"""Polar AccessLink v3 client. (Skeleton: capabilities, OAuth and limits; the client comes next.)"""

from wearsync.models import DataType
from wearsync.providers.core import Provider

PROVIDER = Provider(
    name="polar",
    supports=frozenset({DataType.WORKOUTS}),
    delivery="pull",
    token_path="/v2/oauth2/token",
    client_auth="basic",
)
