"""Reading an Apple Health export.xml as a stream, into the common tables' rows.

`lxml.etree.iterparse` reads the file a chunk at a time; each top-level element is mapped when it
ends and then cleared, and the cleared ones are cut from the tree every few hundred, so memory
stays flat however long the file. What is kept across the file is per day and per night (a few
numbers per source), never per record.

- Samples, one per type and instant (its start): `heart_rate` and `resting_heart_rate` (bpm),
  `hrv_sdnn` (ms: Apple measures SDNN, not RMSSD), `steps` (count) and `energy` (active kcal).
- Workouts: one per Workout element, totals from its attributes or its WorkoutStatistics.
- Sleep: one session per night (sleep starting between noon and the next noon, local time),
  from every source's records: the span covers them all, the stages are those of the source
  that recorded the most sleep (a Watch's stages, where an iPhone only knows the time in bed).
- Daily activity: one row per day, steps and distance from the source that counted the most steps
  (the Watch and the iPhone count the same steps twice), active energy from the day's
  ActivitySummary where there is one, plus basal energy.

Every row's `raw` is its element's attributes (and children), so nothing Apple wrote is lost; its
`provider_record_id` is derived from what identifies it (type, source, times), so importing the
same export, or a later one, again updates rows instead of adding them. Records of other types
are counted, not stored. A date that cannot be read, a number that is not one, or XML that is not
well formed (a file cut short) stops the import: ExportError names the line.
"""

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from json.encoder import encode_basestring as _quoted
from typing import Any

from lxml import etree

from wearsync.imports.archive import BadExport, ExportStream
from wearsync.records import DailyActivity, SleepSession, Workout
from wearsync.storable import check_storable

SOURCE = "apple_health"  # the `provider` of every imported row

_ENERGY = {"kcal": 1.0, "Cal": 1.0, "kJ": 1 / 4.184, "cal": 0.001, "J": 1 / 4184}
_DISTANCE = {"km": 1000.0, "m": 1.0, "mi": 1609.344, "ft": 0.3048, "yd": 0.9144, "cm": 0.01}
_DURATION = {"min": 60.0, "s": 1.0, "hr": 3600.0, "h": 3600.0, "ms": 0.001}
_BPM = {"count/min": 1.0, "count/s": 60.0}
# Record type -> (sample type, unit -> factor to ours)
SAMPLE_TYPES: dict[str, tuple[str, dict[str, float]]] = {
    "HKQuantityTypeIdentifierHeartRate": ("heart_rate", _BPM),
    "HKQuantityTypeIdentifierRestingHeartRate": ("resting_heart_rate", _BPM),
    "HKQuantityTypeIdentifierHeartRateVariabilitySDNN": ("hrv_sdnn", {"ms": 1.0, "s": 1000.0}),
    "HKQuantityTypeIdentifierStepCount": ("steps", {"count": 1.0}),
    "HKQuantityTypeIdentifierActiveEnergyBurned": ("energy", _ENERGY),
}
# Record type -> (index in a day's per-source totals, unit -> factor)
_DAY_TOTALS: dict[str, tuple[int, dict[str, float]]] = {
    "HKQuantityTypeIdentifierStepCount": (0, {"count": 1.0}),
    "HKQuantityTypeIdentifierDistanceWalkingRunning": (1, _DISTANCE),
    "HKQuantityTypeIdentifierActiveEnergyBurned": (2, _ENERGY),
    "HKQuantityTypeIdentifierBasalEnergyBurned": (3, _ENERGY),
}
SLEEP_TYPE = "HKCategoryTypeIdentifierSleepAnalysis"
_ASLEEP = ("AsleepCore", "AsleepDeep", "AsleepREM", "AsleepUnspecified", "Asleep")

_SPORTS = {
    "Running": "running", "Walking": "walking", "Hiking": "hiking", "Cycling": "cycling",
    "HandCycling": "cycling", "Swimming": "swimming", "Rowing": "rowing", "Paddling": "paddling",
    "Sailing": "sailing", "SurfingSports": "surfing", "CrossCountrySkiing": "cross_country_skiing",
    "DownhillSkiing": "alpine_skiing", "Snowboarding": "snowboarding", "SkatingSports": "ice_skating",
    "TraditionalStrengthTraining": "strength_training", "FunctionalStrengthTraining": "strength_training",
    "CrossTraining": "crossfit", "Yoga": "yoga", "Pilates": "pilates", "Flexibility": "stretching",
    "Dance": "dance", "SocialDance": "dance", "CardioDance": "dance", "Elliptical": "elliptical",
    "Climbing": "climbing", "Golf": "golf", "Tennis": "tennis", "Badminton": "badminton",
    "Squash": "squash", "TableTennis": "table_tennis", "Soccer": "soccer", "Basketball": "basketball",
    "Volleyball": "volleyball", "Handball": "handball", "Baseball": "baseball",
    "AmericanFootball": "american_football", "Rugby": "rugby", "Hockey": "hockey", "Cricket": "cricket",
    "MartialArts": "martial_arts", "Boxing": "boxing", "Kickboxing": "boxing",
    "SwimBikeRun": "triathlon", "Mindfulness": "meditation", "EquestrianSports": "horseback_riding",
}  # fmt: skip
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once: json.dumps makes one a call
_TOP_LEVEL = ("Record", "Workout", "ActivitySummary", "Location")
_CHILDREN_KEPT = 200  # children of one element kept in its raw (a workout's statistics, metadata)
_CUT_EVERY = 256  # cleared elements are cut from the tree this often

_ODD_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?\s*(Z|[+-]\d{2}:?\d{2})")


class ExportError(BadExport):
    """export.xml cannot be imported: not well formed, or a value that cannot be read."""


def parse_date(text: str | None) -> datetime:
    """An export's time, `2021-12-11 18:04:47 -0700`, or the ISO 8601 forms other tools write
    (`T`, `Z`, `+07:00`, fractions of a second, no seconds); ValueError without a UTC offset."""
    if text is None:
        raise ValueError("missing")
    if len(text) == 25 and text[19] == " ":  # the Health app's own: the fast path
        try:
            return datetime.fromisoformat(text[:19] + text[20:])
        except ValueError:
            pass
    match = _ODD_DATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text[:64]!r} is not a date and time with a UTC offset")
    day, time, fraction, offset = match.groups()
    if len(time) == 5:
        time += ":00"
    offset = "+00:00" if offset == "Z" else offset if ":" in offset else f"{offset[:3]}:{offset[3:]}"
    fraction = f".{fraction[:6].ljust(6, '0')}" if fraction else ""
    try:
        return datetime.fromisoformat(f"{day}T{time}{fraction}{offset}")
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not a date and time with a UTC offset") from None


def _number(text: str | None) -> float:
    if text is None:
        raise ValueError("missing")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:64]!r} is not a finite number")
    return value


@dataclass
class Batch:
    """Rows read since the last batch, for one write. Samples are (sample_type, recorded_at,
    value, raw JSON, sequence): the sequence orders repeats of one instant (the last one wins)."""

    samples: list[tuple[str, datetime, float, str, int]] = field(default_factory=list)
    workouts: list[Workout] = field(default_factory=list)
    sleep: list[SleepSession] = field(default_factory=list)
    daily: list[DailyActivity] = field(default_factory=list)
    bytes_read: int = 0
    elements: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # records not imported, by type

    def rows(self) -> int:
        return len(self.samples) + len(self.workouts) + len(self.sleep) + len(self.daily)

    def counts(self) -> dict[str, int]:
        counts = {"samples": len(self.samples), "workouts": len(self.workouts)}
        counts |= {"sleep": len(self.sleep), "daily_activity": len(self.daily)}
        return {k: n for k, n in counts.items() if n}


@dataclass
class _Night:
    start: datetime
    end: datetime
    seconds: dict[str, float]
    first: datetime  # the earliest record's start, for the offset


class _Reader:
    """The state one export's reading keeps: per day and per night, per source."""

    def __init__(self) -> None:
        self.seq = 0
        self.days: dict[date, dict[str, list[float]]] = {}
        self.summaries: dict[date, dict[str, str]] = {}
        self.nights: dict[date, dict[str, _Night]] = {}
        self.skipped: Counter[str] = Counter()

    def record(self, el: Any, batch: Batch) -> None:
        items = el.items()  # the attributes decoded once: each el.get decodes again
        attrs: dict[str, str] = dict(items)
        kind = attrs.get("type", "")
        sample = SAMPLE_TYPES.get(kind)
        total = _DAY_TOTALS.get(kind)
        if sample is None and total is None:
            if kind == SLEEP_TYPE:
                self.sleep(el)
            else:
                self.skipped[kind] += 1
            return
        start = _date(el, "startDate", attrs.get("startDate"))
        value = _value(el, attrs.get("value"))
        unit = attrs.get("unit")
        if sample is not None:
            factor = sample[1].get(unit or "")
            if factor is None:
                self.skipped[f"{kind} in {unit}"] += 1
                return
            self.seq += 1
            batch.samples.append((sample[0], start, value * factor, _raw_json(el, items), self.seq))
        if total is not None and (factor := total[1].get(unit or "")) is not None:
            sums = self.days.setdefault(start.date(), {}).setdefault(attrs.get("sourceName") or "", [0.0] * 4)
            sums[total[0]] += value * factor

    def sleep(self, el: Any) -> None:
        start, end = _date(el, "startDate"), _date(el, "endDate")
        stage = (el.get("value") or "").removeprefix("HKCategoryValueSleepAnalysis")
        night = (start - timedelta(hours=12)).date()
        sources = self.nights.setdefault(night, {})
        source = el.get("sourceName") or ""
        kept = sources.get(source)
        if kept is None:
            kept = sources[source] = _Night(start, end, {}, start)
        kept.start, kept.end = min(kept.start, start), max(kept.end, end)
        kept.first = min(kept.first, start)
        kept.seconds[stage] = kept.seconds.get(stage, 0.0) + max(0.0, (end - start).total_seconds())

    def summary(self, el: Any) -> None:
        text = el.get("dateComponents")
        try:
            day = date.fromisoformat(text or "")
        except ValueError:
            raise ExportError(f"line {el.sourceline}: ActivitySummary dateComponents {text!r} is not a date") from None
        self.summaries[day] = dict(el.attrib)

    def nights_rows(self) -> list[SleepSession]:
        rows = []
        for night, sources in sorted(self.nights.items()):
            staged = max(sources.values(), key=lambda n: sum(n.seconds.get(s, 0.0) for s in _ASLEEP))
            asleep = sum(staged.seconds.get(s, 0.0) for s in _ASLEEP)
            start = min(n.start for n in sources.values())
            end = max(n.end for n in sources.values())
            first = min(n.first for n in sources.values())
            raw = {
                "night": night.isoformat(),
                "sources": {
                    name: {"startDate": n.start.isoformat(), "endDate": n.end.isoformat(), "seconds": dict(n.seconds)}
                    for name, n in sorted(sources.items())
                },
            }
            rows.append(
                SleepSession(
                    provider_record_id=f"sleep:{night.isoformat()}",
                    start_time=start,
                    end_time=end,
                    raw=raw,
                    utc_offset_minutes=_offset_minutes(first),
                    duration_s=asleep or (end - start).total_seconds(),
                    deep_s=staged.seconds.get("AsleepDeep"),
                    light_s=staged.seconds.get("AsleepCore"),
                    rem_s=staged.seconds.get("AsleepREM"),
                    awake_s=staged.seconds.get("Awake"),
                )
            )
        return rows

    def day_rows(self) -> list[DailyActivity]:
        rows = []
        for day in sorted(self.days.keys() | self.summaries.keys()):
            sources = self.days.get(day, {})
            summary = self.summaries.get(day)
            stepper = max(sources.values(), key=lambda t: t[0], default=None)
            active = max((t[2] for t in sources.values()), default=0.0)
            basal = max((t[3] for t in sources.values()), default=0.0)
            if summary is not None and summary.get("activeEnergyBurned") is not None:
                factor = _ENERGY.get(summary.get("activeEnergyBurnedUnit") or "kcal")
                if factor is not None:
                    active = _number(summary["activeEnergyBurned"]) * factor
            raw = {
                "ActivitySummary": summary,
                "sources": {k: dict(zip(_TOTAL_NAMES, v, strict=True)) for k, v in sources.items()},
            }
            rows.append(
                DailyActivity(
                    provider_record_id=f"day:{day.isoformat()}",
                    day=day,
                    raw=raw,
                    steps=round(stepper[0]) if stepper and stepper[0] else None,
                    distance_m=stepper[1] if stepper and stepper[1] else None,
                    active_energy_kcal=active or None,
                    energy_kcal=(active + basal) if basal else None,
                )
            )
        return rows


_TOTAL_NAMES = ("steps", "distance_m", "active_energy_kcal", "basal_energy_kcal")


def _date(el: Any, attr: str, text: str | None = "") -> datetime:
    """The element's date attribute `attr` (`text`: its value, when read already)."""
    try:
        return parse_date(el.get(attr) if text == "" else text)
    except ValueError as e:
        raise ExportError(f"line {el.sourceline}: {el.tag} {attr}: {e}") from None


def _value(el: Any, text: str | None) -> float:
    try:
        return _number(text)
    except ValueError as e:
        raise ExportError(f"line {el.sourceline}: {el.get('type')} value {str(e)[:100]}") from None


def _raw_json(el: Any, items: list[tuple[str, str]]) -> str:
    """An element's attributes (`items`), and its children as `_children` has them, as a JSON
    object, made by hand: json.dumps of a dict of them takes twice as long, most of a record's
    mapping."""
    pairs = [f"{_quoted(k)}:{_quoted(v)}" for k, v in items]
    if len(el):
        pairs += (f"{_quoted(k)}:{_json(v)}" for k, v in _children(el).items())
    return "{" + ",".join(pairs) + "}"


def _offset_minutes(moment: datetime) -> int | None:
    offset = moment.utcoffset()
    return None if offset is None else int(offset.total_seconds() // 60)


def _children(el: Any) -> dict[str, Any]:
    """An element's children for its raw: metadata as a dict, the others as lists (each capped)."""
    out: dict[str, Any] = {}
    if len(el) == 1 and el[0].tag == "MetadataEntry":  # a heart rate's motion context: most records with any
        return {"MetadataEntry": {el[0].get("key"): el[0].get("value")}}
    for n, child in enumerate(el.iter()):
        if n > _CHILDREN_KEPT:
            break
        if child is el or not isinstance(child.tag, str):
            continue
        if child.tag == "MetadataEntry":
            out.setdefault("MetadataEntry", {})[child.get("key")] = child.get("value")
        elif child.tag != "HeartRateVariabilityMetadataList":
            out.setdefault(child.tag, []).append(dict(child.attrib))
    return out


def _quantity(value: str | None, unit: str | None, units: dict[str, float]) -> float | None:
    if value is None:
        return None
    factor = units.get(unit or "")
    return None if factor is None else _number(value) * factor


def workout(el: Any) -> Workout:
    """A Workout element as a row: totals from its attributes (older exports) or statistics."""
    kind = el.get("workoutActivityType") or ""
    start, end = _date(el, "startDate"), _date(el, "endDate")
    raw = dict(el.attrib) | _children(el)
    stats = {s.get("type", "").removeprefix("HKQuantityTypeIdentifier"): s for s in el.iter("WorkoutStatistics")}
    try:
        duration = _quantity(el.get("duration"), el.get("durationUnit") or "min", _DURATION)
        distance = _quantity(el.get("totalDistance"), el.get("totalDistanceUnit"), _DISTANCE)
        energy = _quantity(el.get("totalEnergyBurned"), el.get("totalEnergyBurnedUnit"), _ENERGY)
        for name, s in stats.items():
            if distance is None and name.startswith("Distance"):
                distance = _quantity(s.get("sum"), s.get("unit"), _DISTANCE)
        if energy is None and (s := stats.get("ActiveEnergyBurned")) is not None:
            energy = _quantity(s.get("sum"), s.get("unit"), _ENERGY)
        hr = stats.get("HeartRate")
        avg_hr, min_hr, max_hr = (
            (_quantity(hr.get(a), hr.get("unit"), _BPM) for a in ("average", "minimum", "maximum"))
            if hr is not None
            else (None, None, None)
        )
        steps = stats.get("StepCount")
        step_count = _quantity(steps.get("sum"), steps.get("unit"), {"count": 1.0}) if steps is not None else None
    except ValueError as e:
        raise ExportError(f"line {el.sourceline}: Workout {kind}: {e}") from None
    key = f"{kind}|{el.get('sourceName')}|{start.timestamp()}|{end.timestamp()}"
    sport = kind.removeprefix("HKWorkoutActivityType")
    return Workout(
        provider_record_id="workout:" + hashlib.sha256(key.encode()).hexdigest()[:32],
        sport=_SPORTS.get(sport, "other"), provider_sport=kind, start_time=start, end_time=end, raw=raw,
        utc_offset_minutes=_offset_minutes(start),
        duration_s=duration if duration is not None else (end - start).total_seconds(),
        distance_m=distance, energy_kcal=energy, avg_hr=avg_hr, min_hr=min_hr, max_hr=max_hr,
        steps=round(step_count) if step_count is not None and step_count < 2**31 else None,
        device_name=el.get("sourceName"),
    )  # fmt: skip


def read_export(stream: ExportStream, batch_rows: int) -> Iterator[Batch]:
    """The export's rows in batches of about `batch_rows`, the last one with the sleep sessions
    and days (known only at the end). ExportError when the file cannot be read to its end."""
    reader = _Reader()
    batch = Batch()
    events = etree.iterparse(
        stream, events=("end",), tag=_TOP_LEVEL, resolve_entities=False, no_network=True, load_dtd=False,
        huge_tree=False, remove_comments=True, remove_pis=True,
    )  # fmt: skip
    cleared = 0
    try:
        for _, el in events:
            stream.mark()
            tag = el.tag
            parent = el.getparent()
            if tag == "Location":  # a route inside an older export's workout: not kept, not held
                parent.remove(el)
                continue
            if parent is not None and parent.tag == "HealthData":  # a Correlation's Records are also top-level
                batch.elements += 1
                if tag == "Record":
                    reader.record(el, batch)
                elif tag == "Workout":
                    row = workout(el)
                    _check(row, el.sourceline)
                    batch.workouts.append(row)
                else:
                    reader.summary(el)
            el.clear(keep_tail=False)
            cleared += 1
            if cleared >= _CUT_EVERY and parent is not None and parent.tag == "HealthData":
                # Only those before this one: the parser may have read the next ones already.
                del parent[: parent.index(el)]
                cleared = 0
            if len(batch.samples) + len(batch.workouts) >= batch_rows:
                batch.bytes_read = stream.read_bytes
                yield batch
                batch = Batch()
    except etree.XMLSyntaxError as e:
        if stream.ended and (e.lineno or 0) >= stream.newlines:  # at its very end: the rest is missing
            raise ExportError(f"export.xml is cut short: it ends inside an element ({e})") from None
        raise ExportError(f"export.xml is not well-formed XML ({e})") from None
    root = events.root
    if root is None or root.tag != "HealthData":
        tag = root.tag if root is not None else None
        raise ExportError(f"export.xml is not an Apple Health export: its root element is <{tag}>, not <HealthData>")
    batch.sleep, batch.daily = reader.nights_rows(), reader.day_rows()
    summed: list[SleepSession | DailyActivity] = [*batch.sleep, *batch.daily]
    for each in summed:
        _check(each)
    batch.bytes_read = stream.read_bytes
    batch.skipped = dict(reader.skipped)
    yield batch


def _check(row: Workout | SleepSession | DailyActivity, line: int | None = None) -> None:
    try:
        check_storable(row)
    except ValueError as e:
        raise ExportError(f"{f'line {line}: ' if line else ''}{e}") from None
