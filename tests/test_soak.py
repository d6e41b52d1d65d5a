"""`make soak` in small (bench/soak.py): the same code path and checks as the 1,000-user run, with
20 users, so that it cannot rot; and its checks shown to catch what they are for."""

from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench import expected, soak, soak_model, soak_report, soak_tenants
from bench.harness import Processes


async def test_a_small_soak_ends_every_task_and_stores_exactly_what_was_served(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    # A higher error rate than the real run's 1%, so that 20 users' ~300 calls meet some errors.
    # The two tenants' phase in small: 2 s windows, the flood needing about 8 of them.
    flood = soak_tenants.Flood(window_s=2, windows=8, bound_windows=4, quiet_users=2)
    config = soak_model.Config(users=20, rounds=2, workers=1, latency_s=0.01, error_rate=0.05, timeout_s=150,
                               settle_s=0.5, flood=flood)  # fmt: skip
    processes = Processes(log_dir=tmp_path)
    try:
        result = await soak.soak(servers[0], servers[1], processes, config)
    finally:
        processes.close()

    assert soak.failures(result) == []
    assert sum(n for counts in result.tasks.values() for n in counts.values()) == 40
    assert set(result.tasks) == {"garmin", "strava", "polar", "suunto", "whoop"}
    assert result.users_checked == 20
    assert all(result.rows[t] > 0 for t in expected.TABLES), result.rows
    injected = result.upstream("fault:status")
    assert injected > 0
    assert result.retried_by_reason["HTTP 500"] == injected
    assert result.webhook_events["processed"] > 0  # Garmin's backfills came by webhook
    # ... by push and by ping, and every round's Strava and Suunto events were delivered and processed.
    kinds = {kind for kind, counts in result.event_kinds.items() if counts["processed"]}
    assert {"strava activity.create", "suunto workout.workout_created"} <= kinds, result.event_kinds
    assert any(k.startswith("garmin ") and "ping" in k for k in kinds), kinds
    assert [r.events for r in result.rounds] == [Counter({"strava 200": 4, "suunto 200": 4})] * 2
    # The second application's syncs ended within the bound while the flood still ran.
    assert result.flood is not None
    assert result.flood.quiet_tasks == Counter(succeeded=2)
    assert result.flood.flood_tasks == Counter(succeeded=4)
    assert result.flood.flood_open > 0
    assert max(result.flood.quiet_s) <= flood.bound_s
    assert [m.process for m in result.memory] == ["api", "worker0"]
    assert all(len(m.round_end_mb) == 2 and m.peak_mb >= m.start_mb > 0 for m in result.memory)
    report = soak_report.report(result, [])
    assert "**PASSED**" in report
    assert "| upstream errors injected (500) |" in report


def test_compare_finds_rows_missing_extra_twice_or_changed() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    want = expected.expected("strava", {"activities": [{"id": 1, "x": 1}, {"id": 2, "x": 2}]}, [])
    both: list[tuple[expected.Key, Any]] = [("1", {"id": 1, "x": 1}), ("2", {"id": 2, "x": 2})]
    assert expected.compare(want, {"workouts": both}) == {}
    assert expected.compare(want, {"workouts": both[:1]}) == {"workouts": {"missing": 1, "extra": 0, "changed": 0}}
    twice: list[tuple[expected.Key, Any]] = [
        ("1", {"id": 1, "x": 1}),
        ("1", {"id": 1, "x": 1}),
        ("2", {"id": 2, "x": 3}),
        ("9", {}),
    ]
    assert expected.compare(want, {"workouts": twice}) == {"workouts": {"missing": 0, "extra": 2, "changed": 1}}
    # Keys without a raw to compare (Suunto's days) and samples' values.
    want = {t: {} for t in expected.TABLES}
    want |= {"daily_activity": {date(2026, 1, 1): None}, "samples": {("steps", at): 5}}
    assert expected.compare(want, {"daily_activity": [(date(2026, 1, 1), {"any": "grouping"})],
                                   "samples": [(("steps", at), 5)]}) == {}  # fmt: skip
    assert expected.compare(want, {"daily_activity": [(date(2026, 1, 1), {})], "samples": [(("steps", at), 6)]}) == {
        "samples": {"missing": 0, "extra": 0, "changed": 1}
    }


def test_every_failed_check_is_reported() -> None:
    config = soak_model.Config(users=5, rounds=1, error_rate=0.01)
    upstream = {"suunto": Counter({"200": 90, "fault:status": 2})}
    good = soak_model.Result(
        config,
        rounds=[soak_model.Round(1, 5, 1.0, 1.0, upstream)],
        tasks={"suunto": Counter(succeeded=5)},
        users_checked=5,
        webhook_events=Counter(processed=3),
        deliveries=Counter({"garmin 200": 3}),
        retried_by_reason=Counter({"HTTP 500": 2}),
        memory=[soak_model.Memory("worker0", 60.0, [70.0], 72.0)],
    )
    assert soak.failures(good) == []
    bad = soak_model.Result(
        config,
        rounds=[soak_model.Round(1, 5, 0.0, 0.0, upstream, finished=False)],
        tasks={"suunto": Counter(succeeded=3, partial=1)},
        open_tasks=["suunto task 1: running"],
        users_checked=4,
        differences=["suunto user soak00001, workouts: 1 missing of 25 expected"],
        webhook_events=Counter(processed=2, pending=1),
        deliveries=Counter({"garmin 200": 2, "garmin 0": 1}),
        retried_by_reason=Counter({"HTTP 500": 1}),
        logged=Counter({"sync tasks crashed": 1}),
        memory=[soak_model.Memory("worker0", 60.0, [70.0, 80.0], 82.0)],
    )
    found = "\n".join(soak.failures(bad))
    for words in ("4 tasks recorded, 5 asked for", "never ended", "did not succeed", "rows checked for 4 of 5",
                  "differ from the simulators", "deliveries not taken", "events not processed",
                  "2 errors injected, 1 retried", "crashes logged", "worker0 memory grew"):  # fmt: skip
        assert words in found
    report = soak_report.report(bad, soak.failures(bad))
    assert "**FAILED**" in report
    assert "| round 1: tasks | 5, NOT finished (see above) |" in report
    assert "| worker0 | 60.0 | 70.0 | 80.0 | 82.0 | GREW: +10.0 MB after round 1 (allowed 3.5 MB) |" in report
