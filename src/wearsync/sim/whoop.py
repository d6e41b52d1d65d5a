"""Whoop API simulator. (Skeleton: no routes yet.)"""

from typing import Any

from aiohttp import web

NAME = "whoop"


def create_apps() -> tuple[web.Application, web.Application]:
    return web.Application(), web.Application()


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every record the simulator serves this user, as served, for tests to compare with."""
    return {}
