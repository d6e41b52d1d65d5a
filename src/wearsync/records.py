"""Normalized rows, as provider clients produce them and db/records.py stores them.

Units: seconds, metres, kcal, bpm, m/s, watts, percent; datetimes are timezone-aware UTC, with the
user's UTC offset in minutes alongside where the provider gives one.
"""

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


@dataclass(slots=True)
class Workout:
    provider_record_id: str
    sport: str
    provider_sport: str | None
    start_time: datetime
    end_time: datetime
    raw: dict[str, Any]
    name: str | None = None
    utc_offset_minutes: int | None = None
    duration_s: float | None = None
    distance_m: float | None = None
    energy_kcal: float | None = None
    steps: int | None = None
    avg_hr: float | None = None
    max_hr: float | None = None
    min_hr: float | None = None
    avg_speed_mps: float | None = None
    max_speed_mps: float | None = None
    ascent_m: float | None = None
    descent_m: float | None = None
    max_altitude_m: float | None = None
    min_altitude_m: float | None = None
    avg_power_w: float | None = None
    max_power_w: float | None = None
    avg_cadence: float | None = None
    max_cadence: float | None = None
    device_name: str | None = None


@dataclass(slots=True)
class SleepSession:
    provider_record_id: str
    start_time: datetime
    end_time: datetime
    raw: dict[str, Any]
    utc_offset_minutes: int | None = None
    is_nap: bool = False
    duration_s: float | None = None
    deep_s: float | None = None
    light_s: float | None = None
    rem_s: float | None = None
    awake_s: float | None = None
    score: float | None = None
    avg_hr: float | None = None
    min_hr: float | None = None
    avg_hrv_ms: float | None = None
    respiratory_rate: float | None = None
    spo2_percent: float | None = None


@dataclass(slots=True)
class Recovery:
    provider_record_id: str
    recorded_at: datetime
    raw: dict[str, Any]
    utc_offset_minutes: int | None = None
    score: float | None = None
    resting_hr: float | None = None
    hrv_rmssd_ms: float | None = None
    spo2_percent: float | None = None
    skin_temp_c: float | None = None
    stress_state: str | None = None


@dataclass(slots=True)
class DailyActivity:
    provider_record_id: str
    day: date
    raw: dict[str, Any]
    steps: int | None = None
    energy_kcal: float | None = None
    active_energy_kcal: float | None = None
    distance_m: float | None = None


@dataclass(slots=True)
class Sample:
    sample_type: str
    recorded_at: datetime
    value: float
    raw: dict[str, Any]


Record = Workout | SleepSession | Recovery | DailyActivity | Sample

# The progress counter each record lands in.
RECORD_KIND: dict[type, str] = {
    Workout: "workouts",
    SleepSession: "sleep",
    Recovery: "recovery",
    DailyActivity: "daily_activity",
    Sample: "samples",
}
