"""The one list of sports every provider's activity types map to. Unknown types become `other`,
with the provider's own name kept beside it."""

SPORTS = frozenset(
    {
        "walking", "running", "trail_running", "treadmill_running", "track_running", "hiking",
        "cycling", "mountain_biking", "indoor_cycling", "gravel_cycling", "e_biking",
        "swimming", "open_water_swimming", "rowing", "indoor_rowing", "paddling", "kayaking",
        "canoeing", "stand_up_paddling", "sailing", "surfing", "windsurfing", "kitesurfing", "diving",
        "cross_country_skiing", "alpine_skiing", "backcountry_skiing", "snowboarding", "snowshoeing",
        "ice_skating", "inline_skating", "strength_training", "crossfit", "yoga", "pilates",
        "stretching", "dance", "aerobics", "elliptical", "climbing", "mountaineering", "golf",
        "tennis", "badminton", "squash", "padel", "table_tennis", "soccer", "basketball",
        "volleyball", "handball", "baseball", "american_football", "rugby", "hockey", "cricket",
        "martial_arts", "boxing", "multisport", "triathlon", "orienteering", "horseback_riding",
        "skateboarding", "meditation", "other",
    }
)  # fmt: skip
