"""`make soak`'s settings, what it measures, and the memory verdict (bench/soak.py runs it,
bench/soak_report.py writes it up)."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench import soak_tenants

NO_LIMIT = (1_000_000, 900)  # rate limits (the simulators' and ours) that the run never reaches
# Each simulated user's account: small, so that 1,000 of them sync in minutes on 2 shared cores,
# yet every data type has records (Polar's older exercises lie outside what a sync fetches).
HISTORY = {
    "garmin": {"workouts": 6, "days_247": 3},
    "strava": {"workouts": 25},
    "polar": {"workouts": 8, "older_workouts": 2, "days_247": 3},
    "suunto": {"workouts": 25, "days_247": 3},
    "whoop": {"workouts": 10, "days_247": 5},
}
FINAL = ("succeeded", "partial", "failed")
# What the workers log (JSON lines) when they retry or wait, counted from their logs.
LOG_EVENTS = {
    "upstream call failed": "upstream calls retried",
    "upstream rate limited, waiting": "429s waited out",
    "rate limited, deferring the task": "tasks deferred (rate limit)",
    "task continues in a new job": "tasks continued in a new job",
    "database unavailable, retrying the task": "tasks retried (database)",
    "sync task crashed": "sync tasks crashed",
    "webhook event crashed": "webhook events crashed",
    "rate limit share used, the task continues in a new job": "tasks continued after their rate limit share",
}


@dataclass(frozen=True)
class Config:
    users: int = 1000
    rounds: int = 2
    workers: int = 2
    latency_s: float = 0.05
    error_rate: float = 0.01
    timeout_s: float = 900.0  # the whole run
    sample_every_s: float = 0.5
    settle_s: float = 2.0  # idle time before RSS is taken at the start and after each round
    memory_tolerance: float = 0.05  # RSS growth allowed from the end of round 1 to the end
    connect_concurrency: int = 16
    # Every round with users of its own (first syncs every round) instead of re-syncs of round 1's.
    fresh_users: bool = False
    sync_concurrency: int = 64
    # Then two tenants: another application's syncs while the first floods (None: not run).
    flood: soak_tenants.Flood | None = field(default_factory=soak_tenants.Flood)


@dataclass
class User:
    provider: str
    sim_user: str
    user_id: str = ""
    task_ids: list[str] = field(default_factory=list)


@dataclass
class Round:
    number: int
    tasks: int
    sync_s: float  # from the first sync asked for until all tasks were final
    settled_s: float  # ... until the webhooks were delivered and processed too
    upstream: dict[str, Counter[str]]  # provider -> status (200, 429, fault:status, ...) -> calls
    finished: bool = True
    events: Counter[str] = field(default_factory=Counter)  # upstream events' deliveries: "provider status"


@dataclass
class Memory:
    process: str
    start_mb: float  # idle, before the first round
    round_end_mb: list[float]  # idle, after each round
    peak_mb: float  # the kernel's high-water mark (VmHWM)

    @property
    def end_mb(self) -> float:
        return self.round_end_mb[-1]

    @property
    def growth_mb(self) -> float:
        """From the end of the first round (every code path run, the largest working set seen)."""
        return self.end_mb - self.round_end_mb[0]


@dataclass
class Result:
    config: Config
    meta: dict[str, Any] = field(default_factory=dict)
    connect_s: float = 0.0
    rounds: list[Round] = field(default_factory=list)
    tasks: dict[str, Counter[str]] = field(default_factory=dict)  # provider -> status -> tasks
    attempts: Counter[int] = field(default_factory=Counter)  # attempts -> tasks
    open_tasks: list[str] = field(default_factory=list)  # not final when the run gave up
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows
    differences: list[str] = field(default_factory=list)  # per user and table, where rows differ
    users_checked: int = 0
    webhook_events: Counter[str] = field(default_factory=Counter)  # status -> events
    deliveries: Counter[str] = field(default_factory=Counter)  # "provider status" -> deliveries
    event_kinds: dict[str, Counter[str]] = field(default_factory=dict)  # "provider kind" -> status -> events
    logged: Counter[str] = field(default_factory=Counter)  # LOG_EVENTS label -> lines
    retried_by_reason: Counter[str] = field(default_factory=Counter)
    memory: list[Memory] = field(default_factory=list)
    trace: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (s, process -> MB)
    duration_s: float = 0.0
    error: str = ""  # what stopped the run early, if anything
    flood: soak_tenants.FloodResult | None = None

    def upstream(self, status: str | None = None) -> int:
        """Calls the simulators answered (with `status` only, if given), all rounds."""
        return sum(n for r in self.rounds for c in r.upstream.values() for s, n in c.items() if status in (None, s))


def memory_verdict(memory: Memory, tolerance: float) -> tuple[bool | None, str]:
    """Flat: at the end, idle, no more than `tolerance` above where it was, idle, after round 1.
    Round 1 runs every code path and holds the largest working set (first syncs carry all the
    rows); later rounds can only add what is kept, which is what a leak does. With one round
    there is nothing to compare: None."""
    if len(memory.round_end_mb) < 2:
        return None, "not judged: one round (the verdict compares later rounds with the first)"
    allowed = memory.round_end_mb[0] * tolerance
    flat = memory.growth_mb <= allowed
    return flat, f"{memory.growth_mb:+.1f} MB after round 1 (allowed {allowed:.1f} MB)"
