"""What PostgreSQL stores: the columns of each record's row, and checks that a value fits them,
so that a record that would not store fails where it is read, naming the upstream item."""

import json
import sys
from collections.abc import Callable
from dataclasses import fields
from datetime import date, datetime
from types import NoneType
from typing import Any, get_args

from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout

_COMMON = {"provider_record_id": "text"}
_WORKOUT = _COMMON | {
    "sport": "text",
    "provider_sport": "text",
    "name": "text",
    "start_time": "timestamptz",
    "end_time": "timestamptz",
    "utc_offset_minutes": "int",
    "duration_s": "float8",
    "distance_m": "float8",
    "energy_kcal": "float8",
    "steps": "int",
    "avg_hr": "float8",
    "max_hr": "float8",
    "min_hr": "float8",
    "avg_speed_mps": "float8",
    "max_speed_mps": "float8",
    "ascent_m": "float8",
    "descent_m": "float8",
    "max_altitude_m": "float8",
    "min_altitude_m": "float8",
    "avg_power_w": "float8",
    "max_power_w": "float8",
    "avg_cadence": "float8",
    "max_cadence": "float8",
    "device_name": "text",
    "raw": "jsonb",
}
_SLEEP = _COMMON | {
    "start_time": "timestamptz",
    "end_time": "timestamptz",
    "utc_offset_minutes": "int",
    "is_nap": "bool",
    "duration_s": "float8",
    "deep_s": "float8",
    "light_s": "float8",
    "rem_s": "float8",
    "awake_s": "float8",
    "score": "float8",
    "avg_hr": "float8",
    "min_hr": "float8",
    "avg_hrv_ms": "float8",
    "respiratory_rate": "float8",
    "spo2_percent": "float8",
    "raw": "jsonb",
}
_RECOVERY = _COMMON | {
    "recorded_at": "timestamptz",
    "utc_offset_minutes": "int",
    "score": "float8",
    "resting_hr": "float8",
    "hrv_rmssd_ms": "float8",
    "spo2_percent": "float8",
    "skin_temp_c": "float8",
    "stress_state": "text",
    "raw": "jsonb",
}
_DAILY = _COMMON | {
    "day": "date",
    "steps": "int",
    "energy_kcal": "float8",
    "active_energy_kcal": "float8",
    "distance_m": "float8",
    "raw": "jsonb",
}
_SAMPLE = {"sample_type": "text", "recorded_at": "timestamptz", "value": "float8", "raw": "jsonb"}

# Each record type's columns (name -> PostgreSQL type) and the fields that identify a row.
COLUMNS: dict[type, dict[str, str]] = {
    Workout: _WORKOUT, SleepSession: _SLEEP, Recovery: _RECOVERY, DailyActivity: _DAILY, Sample: _SAMPLE,
}  # fmt: skip
KEYS: dict[type, tuple[str, ...]] = {t: ("provider_record_id",) for t in COLUMNS}
KEYS[Sample] = ("sample_type", "recorded_at")


MAX_KEY_CHARS = 255  # a provider's record id: far longer than any provider's, well within an index entry


def check_text(value: Any) -> str:
    """`value` if PostgreSQL stores it as text: a string without NUL characters or lone surrogates
    (which UTF-8 cannot encode); ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("text with a NUL character")
    if not _utf8(value):
        raise ValueError("text with a lone surrogate")
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON escapes can make
        return False
    return True


def json_text(value: Any) -> str:
    """`value` as JSON text PostgreSQL's jsonb accepts; ValueError for NaN or infinite numbers,
    NUL characters (`\\u0000`) and lone surrogates, which jsonb refuses."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not _utf8(text):
        raise ValueError("JSON with a lone surrogate")
    # Every backslash in the text starts an escape; with the escaped backslashes gone, any
    # `\u0000` left is a NUL character.
    if "\\u0000" in text.replace("\\\\", ""):
        raise ValueError("JSON with a NUL character")
    return text


def _key_text(value: Any) -> None:
    if len(check_text(value)) > MAX_KEY_CHARS:
        raise ValueError(f"longer than {MAX_KEY_CHARS} characters")


def _int4(value: Any) -> None:
    if not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise ValueError("not an integer within PostgreSQL's integer range")


def _finite(value: Any) -> None:
    if not isinstance(value, int | float) or not -sys.float_info.max <= value <= sys.float_info.max:
        raise ValueError("not a finite number")


def _aware(value: Any) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("not a timezone-aware datetime")


def _date(value: Any) -> None:
    if not isinstance(value, date):
        raise ValueError("not a date")


def _bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")


_CHECKS: dict[str, Callable[[Any], object]] = {
    "text": check_text, "int": _int4, "float8": _finite, "timestamptz": _aware, "date": _date, "bool": _bool,
    "jsonb": json_text,
}  # fmt: skip
# record type -> (column, its check, nullable) for each column
_COLUMN_CHECKS: dict[type, list[tuple[str, Callable[[Any], object], bool]]] = {
    record_type: [
        (
            f.name,
            _key_text if f.name in key and cols[f.name] == "text" else _CHECKS[cols[f.name]],
            NoneType in get_args(f.type),
        )
        for f in fields(record_type)
    ]
    for record_type, cols in COLUMNS.items()
    for key in [KEYS[record_type]]
}


def check_storable(record: Record, *, raw: bool = True) -> None:
    """ValueError naming the field unless every column of the record's row is one PostgreSQL
    stores: text as `check_text` (an id at most MAX_KEY_CHARS long), int within int4, finite
    floats (NaN or infinity is no measurement), aware datetimes, dates, booleans, raw JSON as
    `json_text` (unless `raw` is False: checked already), and None only where the column may be
    null."""
    for column, check, nullable in _COLUMN_CHECKS[type(record)]:
        value = getattr(record, column)
        if value is None:
            if nullable:
                continue
            problem = "missing"
        elif check is json_text and not raw:
            continue
        else:
            try:
                check(value)
                continue
            except ValueError as e:
                problem = str(e)
        raise ValueError(f"{type(record).__name__}.{column}: {problem}: {str(value)[:100]!r}")
