"""Realistic Apple Health exports (`export.zip`), for tests and `make bench`.

The layout is the Health app's "Export All Health Data": `apple_health_export/export.xml` with the
inline DTD (HealthKit Export Version 14), `ExportDate`, `Me`, then every Record grouped by type and
ordered by time within a type, the Workouts (with their statistics, events, metadata and route),
then one ActivitySummary per day. Per day: heart rate every 5 minutes while awake, every 10 while
asleep and every 10 seconds during a workout (Apple Watch); steps and walking distance from both
the Watch and the iPhone (at instants of their own), active energy every 2 minutes and basal
energy every 15, a few HRV readings with their beat-to-beat lists, a resting heart rate, sleep
stages (Watch) and time in bed (iPhone), plus types wearsync does not import (audio exposure,
body mass). `write_export` returns what it wrote, as the rows an import should store.
"""

import math
import random
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO

WATCH = "Anna’s Apple Watch"
PHONE = "Anna’s iPhone"
_WATCH_DEVICE = (
    "&lt;&lt;HKDevice: 0x28338a0a0&gt;, name:Apple Watch, manufacturer:Apple Inc., model:Watch,"
    " hardware:Watch6,2, software:10.4, creation date:2024-03-01 09:14:55 +0000&gt;"
)
_PHONE_DEVICE = (
    "&lt;&lt;HKDevice: 0x2833a1f40&gt;, name:iPhone, manufacturer:Apple Inc., model:iPhone,"
    " hardware:iPhone14,5, software:17.4&gt;"
)
_SOURCES = {WATCH: ("10.4", _WATCH_DEVICE), PHONE: ("17.4", _PHONE_DEVICE)}

HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!-- HealthKit Export Version: 14 -->
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary|ClinicalRecord|Audiogram|VisionPrescription)*)>
<!ATTLIST HealthData
  locale CDATA #REQUIRED
>
<!ELEMENT ExportDate EMPTY>
<!ATTLIST ExportDate
  value CDATA #REQUIRED
>
<!ELEMENT Me EMPTY>
<!ATTLIST Me
  HKCharacteristicTypeIdentifierDateOfBirth                   CDATA #REQUIRED
  HKCharacteristicTypeIdentifierBiologicalSex                 CDATA #REQUIRED
  HKCharacteristicTypeIdentifierBloodType                     CDATA #REQUIRED
  HKCharacteristicTypeIdentifierFitzpatrickSkinType           CDATA #REQUIRED
  HKCharacteristicTypeIdentifierCardioFitnessMedicationsUse   CDATA #REQUIRED
>
<!ELEMENT Record ((MetadataEntry|HeartRateVariabilityMetadataList)*)>
<!ATTLIST Record
  type          CDATA #REQUIRED
  unit          CDATA #IMPLIED
  value         CDATA #IMPLIED
  sourceName    CDATA #REQUIRED
  sourceVersion CDATA #IMPLIED
  device        CDATA #IMPLIED
  creationDate  CDATA #IMPLIED
  startDate     CDATA #REQUIRED
  endDate       CDATA #REQUIRED
>
<!-- Note: Any Records that appear as children of a correlation also appear as top-level records in this document. -->
<!ELEMENT Correlation ((MetadataEntry|Record)*)>
<!ELEMENT Workout ((MetadataEntry|WorkoutEvent|WorkoutRoute|WorkoutStatistics)*)>
<!ATTLIST Workout
  workoutActivityType   CDATA #REQUIRED
  duration              CDATA #IMPLIED
  durationUnit          CDATA #IMPLIED
  totalDistance         CDATA #IMPLIED
  totalDistanceUnit     CDATA #IMPLIED
  totalEnergyBurned     CDATA #IMPLIED
  totalEnergyBurnedUnit CDATA #IMPLIED
  sourceName            CDATA #REQUIRED
  sourceVersion         CDATA #IMPLIED
  device                CDATA #IMPLIED
  creationDate          CDATA #IMPLIED
  startDate             CDATA #REQUIRED
  endDate               CDATA #REQUIRED
>
<!ELEMENT WorkoutStatistics EMPTY>
<!ELEMENT ActivitySummary EMPTY>
<!ELEMENT MetadataEntry EMPTY>
<!ATTLIST MetadataEntry
  key   CDATA #REQUIRED
  value CDATA #REQUIRED
>
<!ELEMENT HeartRateVariabilityMetadataList (InstantaneousBeatsPerMinute*)>
<!ELEMENT InstantaneousBeatsPerMinute EMPTY>
<!ATTLIST InstantaneousBeatsPerMinute
  bpm  CDATA #REQUIRED
  time CDATA #REQUIRED
>
]>
<HealthData locale="en_US">
 <ExportDate value="{export_date}"/>
 <Me HKCharacteristicTypeIdentifierDateOfBirth="1987-05-14" HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale" HKCharacteristicTypeIdentifierBloodType="HKBloodTypeNotSet" HKCharacteristicTypeIdentifierFitzpatrickSkinType="HKFitzpatrickSkinTypeNotSet" HKCharacteristicTypeIdentifierCardioFitnessMedicationsUse="None"/>
"""
FOOTER = "</HealthData>\n"
EXPORT_XML = "apple_health_export/export.xml"

_SPORTS = (
    ("HKWorkoutActivityTypeRunning", "HKQuantityTypeIdentifierDistanceWalkingRunning"),
    ("HKWorkoutActivityTypeCycling", "HKQuantityTypeIdentifierDistanceCycling"),
    ("HKWorkoutActivityTypeWalking", "HKQuantityTypeIdentifierDistanceWalkingRunning"),
    ("HKWorkoutActivityTypeTraditionalStrengthTraining", None),
    ("HKWorkoutActivityTypeYoga", None),
)
_STAGES = (
    "HKCategoryValueSleepAnalysisAsleepCore",
    "HKCategoryValueSleepAnalysisAsleepDeep",
    "HKCategoryValueSleepAnalysisAsleepCore",
    "HKCategoryValueSleepAnalysisAsleepREM",
    "HKCategoryValueSleepAnalysisAwake",
)


@dataclass
class ExportSummary:
    """What an export holds, as the rows importing it stores: workouts, sleep sessions (one per
    night and source), days, and samples per type (one per type and instant)."""

    days: int = 0
    records: int = 0  # Record, Workout and ActivitySummary elements
    workouts: int = 0
    sleep: int = 0
    daily_activity: int = 0
    samples: Counter[str] = field(default_factory=Counter)
    xml_bytes: int = 0
    zip_bytes: int = 0

    @property
    def rows(self) -> int:
        return self.workouts + self.sleep + self.daily_activity + sum(self.samples.values())


class _Writer:
    def __init__(self, out: IO[bytes], offset: timezone) -> None:
        self.out, self.offset, self.parts, self.size = out, offset, list[str](), 0
        self.buffered = self.elements = 0

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.buffered += len(text)
        if self.buffered > 1 << 20:
            self.flush()

    def flush(self) -> None:
        data = "".join(self.parts).encode()
        self.out.write(data)
        self.size += len(data)
        self.parts, self.buffered = [], 0


def apple_date(moment: datetime) -> str:
    """A time as exports write it: local time and its offset, e.g. `2024-04-01 08:02:11 +0200`."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


class _Day:
    """One day of a simulated life, the same for every record type (seeded by the day)."""

    def __init__(self, seed: int, day: date, offset: timezone) -> None:
        rng = random.Random(f"{seed}:{day.isoformat()}")
        self.day = day
        self.midnight = datetime(day.year, day.month, day.day, tzinfo=offset)
        # Asleep from the evening before until the morning: [bed, wake) as minutes after midnight.
        self.bed = -60 + rng.randrange(0, 90)
        self.wake = 6 * 60 + rng.randrange(0, 90)
        self.workout: tuple[int, int, int] | None = None  # sport index, start minute, minutes
        if rng.random() < 0.6:
            self.workout = (rng.randrange(len(_SPORTS)), 17 * 60 + rng.randrange(0, 120), 25 + rng.randrange(50))
        self.rng = rng

    def at(self, minute: float) -> datetime:
        return self.midnight + timedelta(minutes=minute)


def _record(
    w: _Writer, kind: str, source: str, unit: str | None, value: str, start: datetime, end: datetime, extra: str = ""
) -> None:
    version, device = _SOURCES[source]
    unit_attr = f' unit="{unit}"' if unit else ""
    created = apple_date(end + timedelta(seconds=37))
    head = (
        f' <Record type="{kind}" sourceName="{source}" sourceVersion="{version}" device="{device}"{unit_attr}'
        f' creationDate="{created}" startDate="{apple_date(start)}" endDate="{apple_date(end)}" value="{value}"'
    )
    w.write(f"{head}>\n{extra} </Record>\n" if extra else f"{head}/>\n")
    w.elements += 1


def _heart_rate(w: _Writer, d: _Day, s: ExportSummary) -> None:
    minutes: list[float] = [float(m) for m in range(d.bed + 5, d.wake, 10)]
    minutes += [float(m) for m in range(d.wake, 23 * 60, 5)]  # the next night's start at 23:05 at the earliest
    if d.workout is not None:
        _, start, length = d.workout
        minutes = [m for m in minutes if not start <= m < start + length]
        minutes += [start + i / 6 for i in range(length * 6)]
    for m in sorted(minutes):
        moment = d.at(m)
        bpm = 55 + d.rng.randrange(40) if d.workout is None or not d.workout[1] <= m < sum(d.workout[1:]) else 140
        motion = '  <MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="0"/>\n'
        _record(w, "HKQuantityTypeIdentifierHeartRate", WATCH, "count/min", str(bpm), moment, moment, motion)
        s.samples["heart_rate"] += 1


def _intervals(
    w: _Writer,
    d: _Day,
    s: ExportSummary,
    kind: str,
    unit: str,
    every: int,
    shift: int,
    value: float,
    sample: str | None,
) -> None:
    """Interval records of both sources: the Watch's at `shift` past each step, the iPhone's later."""
    sources = (WATCH,) if kind.endswith("EnergyBurned") else (WATCH, PHONE)
    for n, source in enumerate(sources):
        for m in range(max(d.wake, 0) + shift + 3 * n, 23 * 60, every):
            amount = round(value * (0.5 + d.rng.random()), 3)
            _record(w, kind, source, unit, f"{amount:g}", d.at(m), d.at(m + every - 1))
            if sample:
                s.samples[sample] += 1


def _hrv(w: _Writer, d: _Day, s: ExportSummary) -> None:
    for m in (d.bed + 120, d.wake - 30, 11 * 60, 16 * 60):
        beats = "".join(
            f'   <InstantaneousBeatsPerMinute bpm="{60 + d.rng.randrange(20)}" time="{i // 60:02d}:{i % 60:02d}.{i:02d} AM"/>\n'
            for i in range(0, 60)
        )
        extra = f"  <HeartRateVariabilityMetadataList>\n{beats}  </HeartRateVariabilityMetadataList>\n"
        sdnn = f"{20 + d.rng.random() * 60:.4f}"
        _record(w, "HKQuantityTypeIdentifierHeartRateVariabilitySDNN", WATCH, "ms", sdnn, d.at(m), d.at(m + 1), extra)
        s.samples["hrv_sdnn"] += 1


def _sleep(w: _Writer, d: _Day, s: ExportSummary) -> None:
    kind = "HKCategoryTypeIdentifierSleepAnalysis"
    _record(w, kind, PHONE, None, "HKCategoryValueSleepAnalysisInBed", d.at(d.bed - 10), d.at(d.wake + 5))
    m = d.bed
    while m < d.wake:
        stage = _STAGES[d.rng.randrange(len(_STAGES))]
        length = min(10 + d.rng.randrange(40), d.wake - m)
        _record(w, kind, WATCH, None, stage, d.at(m), d.at(m + length))
        m += length
    s.sleep += 1  # one night: the iPhone's time in bed and the Watch's stages


def _workout(w: _Writer, d: _Day, s: ExportSummary) -> None:
    if d.workout is None:
        return
    sport, start_min, length = d.workout
    kind, distance_type = _SPORTS[sport]
    start, end = d.at(start_min), d.at(start_min + length)
    version, device = _SOURCES[WATCH]
    span = f'startDate="{apple_date(start)}" endDate="{apple_date(end)}"'
    stats = (
        f'  <WorkoutStatistics type="HKQuantityTypeIdentifierActiveEnergyBurned" {span}'
        f' sum="{length * 9.5:.3f}" unit="kcal"/>\n'
        f'  <WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate" {span}'
        f' average="138.2" minimum="92" maximum="171" unit="count/min"/>\n'
    )
    if distance_type:
        stats += f'  <WorkoutStatistics type="{distance_type}" {span} sum="{length * 0.16:.4f}" unit="km"/>\n'
    w.write(
        f' <Workout workoutActivityType="{kind}" duration="{length}" durationUnit="min" sourceName="{WATCH}"'
        f' sourceVersion="{version}" device="{device}" creationDate="{apple_date(end)}" {span}>\n'
        '  <MetadataEntry key="HKIndoorWorkout" value="0"/>\n'
        '  <MetadataEntry key="HKTimeZone" value="Europe/Berlin"/>\n'
        f'  <WorkoutEvent type="HKWorkoutEventTypeSegment" date="{apple_date(start)}" duration="{length}"'
        ' durationUnit="min"/>\n'
        f"{stats}"
        f'  <WorkoutRoute sourceName="{WATCH}" sourceVersion="10.4" {span}>\n'
        f'   <FileReference path="/workout-routes/route_{start.strftime("%Y-%m-%d_%I.%M%p")}.gpx"/>\n'
        "  </WorkoutRoute>\n"
        " </Workout>\n"
    )
    w.elements += 1
    s.workouts += 1


def _summary(w: _Writer, d: _Day, s: ExportSummary) -> None:
    w.write(
        f' <ActivitySummary dateComponents="{d.day.isoformat()}" activeEnergyBurned="{400 + d.rng.random() * 300:.3f}"'
        ' activeEnergyBurnedGoal="500" activeEnergyBurnedUnit="kcal" appleMoveTime="0" appleMoveTimeGoal="0"'
        f' appleExerciseTime="{d.rng.randrange(90)}" appleExerciseTimeGoal="30" appleStandHours="{d.rng.randrange(16)}"'
        ' appleStandHoursGoal="12"/>\n'
    )
    w.elements += 1


def _unimported(w: _Writer, d: _Day, s: ExportSummary) -> None:
    for m in range(d.wake, 22 * 60, 30):
        level = f"{55 + d.rng.random() * 30:.4f}"
        _record(w, "HKQuantityTypeIdentifierEnvironmentalAudioExposure", WATCH, "dBASPL", level, d.at(m), d.at(m + 30))
    if d.day.weekday() == 0:
        _record(w, "HKQuantityTypeIdentifierBodyMass", PHONE, "kg", "61.4", d.at(d.wake + 20), d.at(d.wake + 20))


def _resting(w: _Writer, d: _Day, s: ExportSummary) -> None:
    hr = str(50 + d.rng.randrange(12))
    _record(w, "HKQuantityTypeIdentifierRestingHeartRate", WATCH, "count/min", hr, d.at(0), d.at(23 * 60 + 59))
    s.samples["resting_heart_rate"] += 1


def _steps(w: _Writer, d: _Day, s: ExportSummary) -> None:
    _intervals(w, d, s, "HKQuantityTypeIdentifierStepCount", "count", 15, 0, 200, "steps")


def _active(w: _Writer, d: _Day, s: ExportSummary) -> None:
    _intervals(w, d, s, "HKQuantityTypeIdentifierActiveEnergyBurned", "kcal", 2, 1, 0.9, "energy")


def _basal(w: _Writer, d: _Day, s: ExportSummary) -> None:
    _intervals(w, d, s, "HKQuantityTypeIdentifierBasalEnergyBurned", "kcal", 15, 0, 16, None)


def _distance(w: _Writer, d: _Day, s: ExportSummary) -> None:
    _intervals(w, d, s, "HKQuantityTypeIdentifierDistanceWalkingRunning", "km", 15, 0, 0.12, None)


# Record types in the order exports list them, then the workouts, then the days' summaries.
_SECTIONS = (
    _heart_rate, _steps, _distance, _basal, _active, _resting, _hrv, _unimported, _sleep, _workout, _summary,
)  # fmt: skip
BYTES_PER_DAY = 620_000  # about; `days_for` sizes an export by it


def days_for(xml_bytes: int) -> int:
    return max(1, math.ceil(xml_bytes / BYTES_PER_DAY))


def write_export(
    path: Path, *, days: int, seed: int = 1, first_day: date = date(2021, 1, 1), compresslevel: int = 6
) -> ExportSummary:
    """An export.zip of `days` days from `first_day`, deterministic per seed; what it holds."""
    offset = timezone(timedelta(hours=2))
    summary = ExportSummary(days=days)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as archive,
        archive.open(EXPORT_XML, "w", force_zip64=True) as out,
    ):
        w = _Writer(out, offset)
        export_date = datetime.combine(first_day + timedelta(days=days), datetime.min.time(), UTC)
        w.write(HEADER.replace("{export_date}", apple_date(export_date.astimezone(offset))))
        for section in _SECTIONS:
            for n in range(days):
                section(w, _Day(seed, first_day + timedelta(days=n), offset), summary)
        w.write(FOOTER)
        w.flush()
        summary.xml_bytes, summary.records = w.size, w.elements
    summary.daily_activity = days
    summary.zip_bytes = path.stat().st_size
    return summary


def write_zip(path: Path, members: dict[str, bytes | str]) -> None:
    """A zip of the given members (name -> content), e.g. a hand-made export.xml for a test."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def main() -> None:
    """`python -m wearsync.sim.apple_health export.zip --days 30`: an export to try the import with."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wearsync.sim.apple_health", description=main.__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    summary = write_export(args.path, days=args.days, seed=args.seed)
    print(f"{args.path}: {summary.records} records, {summary.xml_bytes} bytes of export.xml, {summary.rows} rows")


if __name__ == "__main__":
    main()
