"""wearsync: pulls wearable data from Garmin, Strava, Polar, Suunto and Whoop into PostgreSQL."""

__version__ = "0.1.0"
