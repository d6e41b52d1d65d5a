"""The providers: each is data (what it supports, how data arrives, OAuth, limits) plus client
functions, one module per provider. The capability table of the contract lives here for all five,
so the API answers 404 and 501 correctly whatever each client can do."""

from typing import Any

from wearsync.providers import garmin, polar, strava, suunto, whoop
from wearsync.providers.core import Provider

PROVIDERS: dict[str, Provider[Any]] = {p.PROVIDER.name: p.PROVIDER for p in (garmin, strava, polar, suunto, whoop)}
