"""The Strava simulator's data: deterministic athletes and activities per simulated user, and the
activities `emit` adds later (see sim/strava.py for the API that serves them).

History: 450 activities over about two years by default (`{"workouts": N}` through /_sim sets
another size). Activities carry the user's time zone ("(GMT+01:00) Europe/Paris") with
`utc_offset` in seconds as of the activity (daylight saving time from the system's zone data,
the standard offset where it is missing), and `start_date_local` in local time with Strava's
misleading `Z`. A few are manual (no device, heart rate or elevation; `upload_id` null), some lack
heart rate or a device name, and a sport type of Strava's list our client does not map
("Pickleball") appears at least once, for the client's edge cases. An activity without a position
has `start_latlng`/`end_latlng` null, as the spec's own example shows (the spec's `LatLng` is a
pair, so not the empty list some clients report from the live API).
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from wearsync.sim.common import cached_user_data, user_rng

NAME = "strava"
DEFAULT_HISTORY = {"workouts": 450}  # over about two years: more than two pages of 200

# (Strava's label, zone, standard offset in minutes)
_ZONES = [("(GMT+01:00) Europe/Paris", "Europe/Paris", 60), ("(GMT-05:00) America/New_York", "America/New_York", -300),
          ("(GMT+00:00) Europe/London", "Europe/London", 0), ("(GMT+05:30) Asia/Kolkata", "Asia/Kolkata", 330),
          ("(GMT+10:00) Australia/Sydney", "Australia/Sydney", 600),
          ("(GMT-08:00) America/Los_Angeles", "America/Los_Angeles", -480)]  # fmt: skip

# sport_type -> (legacy type, speed m/s or None without distance, outdoors with GPS, power, weight)
_SPORTS: dict[str, tuple[str, float | None, bool, bool, int]] = {
    "Run": ("Run", 3.0, True, False, 30), "Ride": ("Ride", 7.5, True, True, 20), "Walk": ("Walk", 1.4, True, False, 8),
    "Hike": ("Hike", 1.1, True, False, 5), "TrailRun": ("Run", 2.4, True, False, 5),
    "VirtualRide": ("VirtualRide", 8.5, False, True, 6), "MountainBikeRide": ("Ride", 5.0, True, True, 4),
    "GravelRide": ("Ride", 6.5, True, True, 3), "Swim": ("Swim", 0.8, False, False, 6),
    "WeightTraining": ("WeightTraining", None, False, False, 6), "Yoga": ("Yoga", None, False, False, 3),
    "Workout": ("Workout", None, False, False, 2), "HighIntensityIntervalTraining": ("Workout", None, False, False, 1),
    "NordicSki": ("NordicSki", 3.5, True, False, 1), "AlpineSki": ("AlpineSki", 8.0, True, False, 1),
    "Rowing": ("Rowing", 3.0, True, False, 1), "EBikeRide": ("EBikeRide", 7.0, True, True, 1),
    "VirtualRun": ("VirtualRun", 3.1, False, False, 1), "Pickleball": ("Workout", None, False, False, 1),
}  # fmt: skip
_SPORT_TYPES, _WEIGHTS = list(_SPORTS), [s[4] for s in _SPORTS.values()]
_DEVICES = ["Garmin Forerunner 965", "Garmin Edge 540", "Wahoo ELEMNT BOLT", "Apple Watch Series 9", "Strava App"]


@dataclass
class UserData:
    athlete: dict[str, Any]
    activities: list[dict[str, Any]]  # summaries, oldest first
    calories: dict[int, float]  # activity id -> the detail's calorie estimate
    zone: tuple[str, str, int]  # where the athlete usually is


def athlete(user: str) -> dict[str, Any]:
    """The athlete summary a user's token response and `GET /athlete` carry."""
    rng = user_rng(NAME, user, "athlete")
    created = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(3000))
    return {
        "id": rng.randrange(10**6, 10**8),
        "username": None,
        "resource_state": 2,
        "firstname": user,
        "lastname": "Sim",
        # Strava's DetailedAthlete has them as non-null strings.
        "city": (city := rng.choice(["Paris", "Boston", "Pune", "Oslo"])),
        "country": {"Paris": "France", "Boston": "United States", "Pune": "India", "Oslo": "Norway"}[city],
        "sex": rng.choice(["F", "M"]),
        "premium": rng.random() < 0.3,
        "summit": False,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _offset_s(zone: str, standard_minutes: int, at: datetime) -> float:
    try:
        offset = ZoneInfo(zone).utcoffset(at)
    except ZoneInfoNotFoundError:
        offset = None
    return offset.total_seconds() if offset is not None else standard_minutes * 60.0


def _activity(
    rng: random.Random,
    athlete_id: int,
    start: datetime,
    zone: tuple[str, str, int],
    i: int,
    sport_type: str,
    manual: bool,
) -> dict[str, Any]:
    legacy, speed, outdoors, power, _ = _SPORTS[sport_type]
    moving = rng.randrange(1200, 9000)
    elapsed = moving if manual else int(moving * rng.uniform(1.0, 1.15))
    speed = None if speed is None else round(speed * rng.uniform(0.8, 1.2), 3)
    offset = _offset_s(zone[1], zone[2], start)
    a: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "name": rng.choice([f"Morning {sport_type}", f"Evening {sport_type}", f"{sport_type} #{i}"]),
        "distance": round(speed * moving, 1) if speed else 0.0,
        "moving_time": moving,
        "elapsed_time": elapsed,
        "total_elevation_gain": round(rng.uniform(0, 900), 1) if outdoors else 0.0,
        "type": legacy,
        "sport_type": sport_type,
        "workout_type": None,
        "id": 0,  # numbered once every activity is laid out, oldest first
        "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "start_date_local": (start + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timezone": zone[0],
        "utc_offset": offset,
        "trainer": not outdoors and speed is not None,
        "commute": rng.random() < 0.05,
        "manual": manual,
        "private": False,
        "visibility": "everyone",
        "start_latlng": None,
        "end_latlng": None,
        "average_speed": speed or 0.0,
        "max_speed": round(speed * rng.uniform(1.3, 2.0), 3) if speed else 0.0,
        "has_heartrate": False,
        "heartrate_opt_out": False,
        "display_hide_heartrate_option": False,
        "kudos_count": rng.randrange(0, 30),
        "pr_count": 0,
        "upload_id": None,
    }
    if not manual:
        a["upload_id"] = rng.randrange(10**10, 10**11)
        if rng.random() < 0.95:
            a["device_name"] = "Zwift" if sport_type.startswith("Virtual") else rng.choice(_DEVICES)
        if rng.random() < 0.85:
            a["has_heartrate"] = True
            a["average_heartrate"] = round(rng.uniform(105, 160), 1)
            a["max_heartrate"] = float(rng.randrange(160, 192))
        if outdoors:
            lat, lng = round(rng.uniform(40, 50), 6), round(rng.uniform(-5, 10), 6)
            a["start_latlng"], a["end_latlng"] = [lat, lng], [round(lat + 0.01, 6), round(lng + 0.01, 6)]
            a["elev_low"] = round(rng.uniform(0, 400), 1)
            a["elev_high"] = round(a["elev_low"] + rng.uniform(5, 800), 1)
        if sport_type in ("Run", "TrailRun", "VirtualRun", "Ride", "GravelRide", "VirtualRide"):
            a["average_cadence"] = round(rng.uniform(75, 92), 1)
        if sport_type in ("Run", "TrailRun"):
            a["workout_type"] = rng.choice([0, 0, 0, 1, 2, 3])
    if power and not manual:
        a["average_watts"] = round(rng.uniform(140, 260), 1)
        a["kilojoules"] = round(a["average_watts"] * moving / 1000, 1)
        a["device_watts"] = sport_type == "VirtualRide" or rng.random() < 0.5
        if a["device_watts"]:
            a["weighted_average_watts"] = int(a["average_watts"] * 1.05)
            a["max_watts"] = rng.randrange(500, 1100)
    return a


def _calories(rng: random.Random, a: dict[str, Any]) -> float:
    """The detail's estimate: about the work done for rides with power, by time otherwise;
    0 for manual entries, as Strava answers when it has nothing to estimate from."""
    if a["manual"]:
        return 0.0
    if "kilojoules" in a:
        return round(float(a["kilojoules"]) * rng.uniform(0.95, 1.1), 1)
    return round(int(a["moving_time"]) / 60 * rng.uniform(5, 12), 1)


def _activities(
    user: str, anchor: datetime, count: int, athlete_id: int
) -> tuple[list[dict[str, Any]], dict[int, float], tuple[str, str, int]]:
    rng = user_rng(NAME, user, "activities")
    home = rng.choice(_ZONES)
    starts, start = [], anchor
    for _ in range(count):
        start -= timedelta(hours=rng.uniform(20, 58), seconds=rng.randrange(3600))
        starts.append(start)
    activities, calories = [], {}
    activity_id = rng.randrange(2 * 10**9, 3 * 10**9)
    for i, at in enumerate(reversed(starts)):
        zone = home if rng.random() < 0.95 else rng.choice(_ZONES)  # away from home now and then
        # The newest few always include the edge cases: a manual entry, a sport our client lacks.
        sport_type = {count - 2: "Pickleball", count - 3: "Run"}.get(i) or rng.choices(_SPORT_TYPES, _WEIGHTS)[0]
        manual = i == count - 3 or rng.random() < 0.03
        a = _activity(rng, athlete_id, at, zone, i, sport_type, manual)
        activity_id += rng.randrange(1_000, 50_000_000)
        a["id"] = activity_id
        activities.append(a)
        calories[activity_id] = _calories(rng, a)
    return activities, calories, home


def user_data(request_or_app: web.Request | web.Application, user: str) -> UserData:
    return cached_user_data(request_or_app, NAME, user, DEFAULT_HISTORY, _build_user_data)


def _build_user_data(user: str, history: dict[str, int], anchor: datetime) -> UserData:
    profile = athlete(user)
    return UserData(profile, *_activities(user, anchor, history["workouts"], profile["id"]))


def new_activity(
    data: UserData, user: str, n: int, start: datetime, after_id: int, sport_type: str | None = None
) -> tuple[dict[str, Any], float]:
    """The `n`th activity uploaded after the history was laid out (the same one for the same n):
    recorded with a device, so its detail has a calorie estimate; its id follows `after_id`."""
    rng = user_rng(NAME, user, f"added-{n}")
    sport = sport_type if sport_type in _SPORTS else rng.choices(_SPORT_TYPES, _WEIGHTS)[0]
    a = _activity(rng, data.athlete["id"], start, data.zone, len(data.activities) + n, sport, manual=False)
    a["id"] = after_id + rng.randrange(1_000, 50_000_000)
    return a, _calories(rng, a)


def legacy_type(sport_type: str) -> str:
    """The legacy `type` Strava derives from a sport type (Workout where we know of none)."""
    return _SPORTS[sport_type][0] if sport_type in _SPORTS else "Workout"
