"""One list of provider names: ProviderName. The registries and the database agree with it."""

import re

import asyncpg

from wearsync.models import ProviderName, SyncParams
from wearsync.providers import PROVIDERS
from wearsync.settings import PROVIDER_SETTINGS
from wearsync.sim import SIMULATORS


def names(found: object) -> list[str]:
    return sorted(str(name) for name in found)  # type: ignore[attr-defined]


def test_every_provider_has_a_client_a_simulator_and_its_settings() -> None:
    expected = sorted(p.value for p in ProviderName)
    assert names(PROVIDERS) == expected
    assert names(SIMULATORS) == expected
    assert names(PROVIDER_SETTINGS) == expected
    for name, provider in PROVIDERS.items():
        assert provider.name == name
        assert PROVIDER_SETTINGS[name] is provider.config


async def test_the_database_takes_exactly_these_providers(db: asyncpg.Pool) -> None:
    checks = await db.fetch(
        "SELECT conrelid::regclass::text AS tab, pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE contype = 'c' AND pg_get_constraintdef(oid) LIKE '%provider%'"
    )
    assert checks, "no CHECK of provider names"
    for check in checks:
        listed = re.findall(r"'(\w+)'::text", check["def"])
        assert sorted(listed) == sorted(p.value for p in ProviderName), (check["tab"], check["def"])


def test_a_provider_reads_only_sync_parameters_there_are() -> None:
    for provider in PROVIDERS.values():
        assert set(provider.params) <= set(SyncParams.model_fields), provider.name
    every = {name for provider in PROVIDERS.values() for name in provider.params}
    assert every == set(SyncParams.model_fields)  # none that no provider reads
