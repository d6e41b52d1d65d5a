"""What a first sync must have stored for one user, from what the provider's simulator says it
serves (`GET /_sim/P/users/NAME/records`), computed here apart from the clients' mapping code.

Per table, a record's key (how the provider identifies it: its id, or its instant or day where
it has none) and the raw JSON the row must hold (None: the row's raw is our own grouping, only
the key is compared); for `samples`, (sample type, instant) -> value.
"""

from datetime import UTC, date, datetime
from typing import Any

Key = str | datetime | date | tuple[str, datetime]
Expected = dict[str, dict[Key, Any]]  # table -> key -> raw (or a sample's value)

TABLES = ("workouts", "sleep_sessions", "recoveries", "daily_activity", "samples")
# Where a provider's record has no id of its own, the column that holds its key.
KEY_COLUMNS = {("suunto", "recoveries"): "recorded_at", ("suunto", "daily_activity"): "day"}
GARMIN_TYPES = ("activities", "dailies", "epochs", "sleeps", "hrv")
JOULES_PER_KCAL = 4184
# Polar serves these only when a sync asks for them (a default sync does not).
POLAR_FLAG_FIELDS = ("samples", "heart_rate_zones", "route")


def key_column(provider: str, table: str) -> str:
    return KEY_COLUMNS.get((provider, table), "provider_record_id")


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def suunto(records: dict[str, Any]) -> Expected:
    samples: dict[Key, Any] = {}
    for entry in records["activity"]:
        at, data = datetime.fromisoformat(entry["timestamp"]).astimezone(UTC), entry["entryData"]
        samples[("heart_rate", at)] = data["HR"]
        samples[("steps", at)] = data["StepCount"]
        samples[("energy", at)] = data["EnergyConsumption"] / JOULES_PER_KCAL
        if "SpO2" in data:
            samples[("spo2", at)] = data["SpO2"] * 100
        if data.get("HRV"):
            samples[("hrv_rmssd", at)] = data["HRV"]
    days = {date.fromisoformat(s["TimeISO8601"][:10]) for s in records["daily"][0]["Sources"][0]["Samples"]}
    return {
        "workouts": {w["workoutKey"]: w for w in records["workouts"]},
        "sleep_sessions": {str(s["entryData"]["SleepId"]): s for s in records["sleep"]},
        "recoveries": {datetime.fromisoformat(e["timestamp"]): e for e in records["recovery"]},
        "daily_activity": dict.fromkeys(days),
        "samples": samples,
    }


def garmin(records: dict[str, Any], windows: list[tuple[str, int, int]]) -> Expected:
    """What the backfill `windows` (type, start, end) the user's syncs asked for deliver: each
    type's summaries starting in one of its windows."""
    got = {
        kind: [s for s in records[kind] if any(k == kind and a <= s["startTimeInSeconds"] < b for k, a, b in windows)]
        for kind in GARMIN_TYPES
    }
    samples: dict[Key, Any] = {}
    for d in got["dailies"]:
        for offset, bpm in d.get("timeOffsetHeartRateSamples", {}).items():
            samples[("heart_rate", _at(d["startTimeInSeconds"] + int(offset)))] = bpm
    for e in got["epochs"]:  # epochs of several activities in one slot add up
        for kind, field in (("steps", "steps"), ("energy", "activeKilocalories")):
            slot = (kind, _at(e["startTimeInSeconds"]))
            samples[slot] = samples.get(slot, 0) + e[field]
    return {
        "workouts": {s["summaryId"]: s for s in got["activities"]},
        "sleep_sessions": {s["summaryId"]: s for s in got["sleeps"]},
        "recoveries": {s["summaryId"]: s for s in got["hrv"]},
        "daily_activity": {d["calendarDate"]: d for d in got["dailies"]},
        "samples": samples,
    }


def polar(records: dict[str, Any]) -> Expected:
    """Exercises without the flagged fields; nights, recharges and activity days by their dates;
    continuous heart rate of the 28 days up to the newest night (what a first sync asks for), its
    local times shifted by that date's night's UTC offset."""
    exercises = {e["id"]: {k: v for k, v in e.items() if k not in POLAR_FLAG_FIELDS} for e in records["exercises"]}
    nights = records.get("nights", {})
    samples: dict[Key, Any] = {}
    newest = max((date.fromisoformat(d) for d in nights), default=None)
    for day, hr in records.get("heart_rate", {}).items():
        if newest is None or (newest - date.fromisoformat(day)).days > 27:
            continue
        start = datetime.fromisoformat(nights[day]["sleep_start_time"]) if day in nights else None
        offset = start.utcoffset() if start is not None else None
        for sample in hr["heart_rate_samples"]:
            local = datetime.fromisoformat(f"{day}T{sample['sample_time']}").replace(tzinfo=UTC)
            samples[("heart_rate", local - offset if offset is not None else local)] = sample["heart_rate"]
    return {
        "workouts": exercises,
        "sleep_sessions": dict(nights),
        "recoveries": dict(records.get("recharges", {})),
        "daily_activity": dict(records.get("activities", {})),
        "samples": samples,
    }


def strava(records: dict[str, Any]) -> Expected:
    return {"workouts": {str(a["id"]): a for a in records["activities"]}}


def as_listed(provider: str, raw: Any, records: dict[str, Any]) -> Any:
    """A stored row's raw as the provider's list serves it. A Strava activity fetched for a webhook
    event holds its detail: the summary with resource_state 3, the calories the simulator says it
    has and an empty description. A Suunto workout stored from a notification lacks the `gear` the
    list carries (the notification has it beside the workout), and one fetched by its key names
    itself `key`. Anything else stays as it is (a difference is one)."""
    if provider == "suunto" and isinstance(raw, dict):
        return _suunto_as_listed(raw, records)
    if provider != "strava" or not isinstance(raw, dict) or raw.get("resource_state") != 3:
        return raw
    if raw.get("calories") != records["calories"].get(str(raw.get("id"))) or raw.get("description") is not None:
        return raw
    return {k: v for k, v in raw.items() if k not in ("calories", "description")} | {"resource_state": 2}


def _suunto_as_listed(raw: dict[str, Any], records: dict[str, Any]) -> Any:
    listed = raw
    if "key" in raw and "workoutKey" not in raw:
        listed = {"workoutKey": raw["key"]} | {k: v for k, v in raw.items() if k != "key"}
    served = next((w for w in records.get("workouts", []) if w.get("workoutKey") == listed.get("workoutKey")), None)
    if served is not None and listed in (served, {k: v for k, v in served.items() if k != "gear"}):
        return served
    return raw


def whoop(records: dict[str, Any]) -> Expected:
    return {
        "workouts": {w["id"]: w for w in records["workout"]},
        "sleep_sessions": {s["id"]: s for s in records["sleep"]},
        "recoveries": {str(r["cycle_id"]): r for r in records["recovery"]},
        "daily_activity": {str(c["id"]): c for c in records["cycle"]},
    }


def expected(provider: str, records: dict[str, Any], windows: list[tuple[str, int, int]]) -> Expected:
    """Every table, empty where the provider stores nothing."""
    if provider == "garmin":
        found = garmin(records, windows)
    else:
        found = {"suunto": suunto, "polar": polar, "strava": strava, "whoop": whoop}[provider](records)
    return {table: found.get(table, {}) for table in TABLES}


def compare(want: Expected, rows: dict[str, list[tuple[Key, Any]]]) -> dict[str, dict[str, int]]:
    """Per table with a difference: records missing, extra (stored but not served, or stored
    twice) and changed (stored with another raw or value). `rows`: every stored row's (key, raw
    or value), by table."""
    differences = {}
    for table in TABLES:
        w, h = want[table], dict(rows.get(table, []))
        missing = len(w.keys() - h.keys())
        extra = len(h.keys() - w.keys()) + len(rows.get(table, [])) - len(h)
        changed = sum(1 for k in w.keys() & h.keys() if w[k] is not None and w[k] != h[k])
        if missing or extra or changed:
            differences[table] = {"missing": missing, "extra": extra, "changed": changed}
    return differences
