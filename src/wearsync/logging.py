"""structlog set-up: configured once per process, JSON in production, console in development.

Every line carries what the context bound: `request_id` in the API (middlewares.request_context),
`task_id` or `event_id` in a worker's job (worker.py), down to the provider clients' lines. The
standard library's loggers (arq, aiohttp, asyncio) go through the same chain, and so, with
`capture_stray_output`, does what Python itself would print, so a process writes one format only."""

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
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


class _RoutineAtDebug(logging.Filter):
    """arq logs every run of a cron job (twice: start and end, for each job every minute) and its
    health record at INFO: routine, so DEBUG here, and the lines worth reading stay in view."""

    ROUTINE = re.compile(r"^\s*-?[\d.]+s [→←] cron:|^recording health: ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and self.ROUTINE.search(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_ARQ_ROUTINE_AT_DEBUG = _RoutineAtDebug()


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
    logging.getLogger("arq.worker").addFilter(_ARQ_ROUTINE_AT_DEBUG)  # once: the same filter is not added twice
    structlog.configure(
        processors=[*shared, redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def capture_stray_output() -> None:
    """What Python would print to stderr in plain text goes through the chain above, one line each:
    warnings, an exception that ends the process or a thread, and one Python can only report
    ("Exception ignored in ...": raised in a `__del__`, or by a coroutine or generator closed as it
    is collected). For the processes `wearsync` runs; a test process keeps its own hooks."""
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable


_log = structlog.get_logger(__name__)


def _uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    _log.critical("uncaught exception, the process ends", exc_info=(kind, error, traceback))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as Python's own hook: a thread may end that way
        return
    thread = args.thread.name if args.thread is not None else None
    _log.error(
        "uncaught exception in a thread", thread=thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def _unraisable(unraisable: "sys.UnraisableHookArgs") -> None:  # a name in typeshed only
    try:
        where = repr(unraisable.object)
    except Exception:  # the object may be half torn down
        where = object.__repr__(unraisable.object)
    info = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    _log.error(unraisable.err_msg or "Exception ignored in", object=where, exc_info=info)
