"""structlog set-up: configured once per process, JSON in production, console in development.

Every line carries what the context bound: `request_id` in the API (middlewares.request_context),
`task_id` or `event_id` in a worker's job (worker.py), down to the provider clients' lines. The
standard library's loggers (arq, aiohttp, asyncio) go through the same chain, so a process writes
one format only."""

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Field names whose values are never logged: tokens, keys, secrets, signatures, credentials.
_SECRET_NAME = re.compile(r"token|secret|password|passwd|authorization|api[_-]?key|signature|credential", re.I)
# Values that look like secrets wherever they appear: bearer headers, our API keys, JWTs.
_SECRET_VALUE = re.compile(r"(Bearer\s+)[^\s\"',]+|\bws_[A-Za-z0-9_-]{20,}|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+")
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(lambda m: (m.group(1) or "") + REDACTED, value)
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_NAME.search(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: fields named like secrets are replaced, and secret-looking values
    (bearer tokens, API keys, JWTs) inside any string are masked, so no log line carries one."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if _SECRET_NAME.search(key) else _scrub(value)
    return event_dict


def configure_logging(log_format: str = "console", level: str = "INFO") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_secrets, renderer],
        )
    )
    logging.basicConfig(handlers=[handler], level=level.upper())
    structlog.configure(
        processors=[*shared, redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
