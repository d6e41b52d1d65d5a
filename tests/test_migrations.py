import asyncpg

from wearsync.db.migrate import migrate, migration_files


async def test_migrations_are_recorded_and_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn) == []  # the session fixture applied them all
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == [name for name, _ in migration_files()]
    finally:
        await conn.close()


def test_migration_numbers_are_unique_and_consecutive() -> None:
    # Two branches each adding "0011_..." would both apply, in an order nobody chose.
    numbers = [int(name.split("_", 1)[0]) for name, _ in migration_files()]
    assert numbers == list(range(1, len(numbers) + 1))
