"""`make soak`'s report (bench/soak.md): what was run, the counts, memory, and the verdict."""

from collections import Counter

from bench import soak_tenants
from bench.soak_model import HISTORY, NO_LIMIT, Config, Result, memory_verdict
from wearsync.models import ProviderName

PROVIDER_NAMES = tuple(p.value for p in ProviderName)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _counts(counts: Counter[str] | dict[str, int], sep: str = " ") -> str:
    return ", ".join(f"{k}{sep}{_n(n)}" for k, n in counts.items()) or "none"


def _what_was_run(c: Config) -> str:
    accounts = "; ".join(f"{p} {', '.join(f'{k} {v}' for k, v in h.items())}" for p, h in HISTORY.items())
    rounds = (
        "every round with users of its own (first syncs every round)"
        if c.fresh_users
        else "round 1: first syncs; then re-syncs of the same users"
    )
    fresh = " --fresh-users" if c.fresh_users else ""
    return (
        f"`python -m bench.soak --users {c.users} --rounds {c.rounds} --workers {c.workers} "
        f"--latency-ms {c.latency_s * 1000:.0f} --error-rate {c.error_rate}{fresh}`: "
        f"{c.users:,} users ({c.users // len(PROVIDER_NAMES):,} per provider) made and connected through the API, "
        f"then {c.rounds} round(s) of every user's sync asked for at once ({rounds}), against simulators answering "
        f"every call {c.latency_s * 1000:.0f} ms late and {c.error_rate:.1%} of them with a 500, rate limits (theirs "
        f"and ours) at {NO_LIMIT[0]:,} per {NO_LIMIT[1]} s. Each round, a new workout upstream for every Strava and "
        "Suunto user, delivered by webhook (Suunto's notification carrying it for every other user, naming it "
        "for the rest); Garmin's backfills by push for half its users, by ping (the callback fetched) for the "
        f"others. One API and {c.workers} worker(s), default settings otherwise, no scheduled syncs. Each simulated "
        f"account: {accounts}." + (f" {soak_tenants.describe(c.flood)}" if c.flood is not None else "")
    )


def _count_rows(result: Result) -> list[tuple[str, str]]:
    statuses = Counter[str]()
    for counts in result.tasks.values():
        statuses.update(counts)
    users_differing = len({d.split(",")[0] for d in result.differences})
    rows = [("users connected", f"{_n(result.config.users)} in {result.connect_s:.1f} s")]
    rows += [(f"round {r.number}: tasks", f"{_n(r.tasks)}, all final after {r.sync_s:.1f} s, webhooks processed "
              f"after {r.settled_s:.1f} s" if r.finished else f"{_n(r.tasks)}, NOT finished (see above)")
             for r in result.rounds]  # fmt: skip
    rows.append(("tasks by status", _counts(Counter(dict(statuses.most_common())))))
    rows += [(f"{p} tasks", _counts(counts)) for p, counts in sorted(result.tasks.items())]
    rows.append(("tasks by attempts", _counts({str(a): n for a, n in sorted(result.attempts.items())}, ": ")))
    rows += [(f"rows in {table}", _n(n)) for table, n in result.rows.items()]
    rows.append(("users whose rows equal the simulators' records",
                 f"{_n(result.users_checked - users_differing)} of {_n(result.users_checked)}"))  # fmt: skip
    for r in result.rounds:
        calls = {p: sum(r.upstream.get(p, Counter()).values()) for p in PROVIDER_NAMES}
        rows.append((f"round {r.number}: upstream calls", f"{_n(sum(calls.values()))} ({_counts(calls)})"))
    rows.append(("upstream errors injected (500)", _n(result.upstream("fault:status"))))
    rows.append(("upstream calls retried", f"{_n(sum(result.retried_by_reason.values()))} "
                 f"({_counts(result.retried_by_reason, ': ')})"))  # fmt: skip
    rows += [(label, _n(n)) for label, n in sorted(result.logged.items()) if label != "upstream calls retried"]
    for r in result.rounds:
        rows.append((f"round {r.number}: upstream events delivered", _counts(dict(sorted(r.events.items())), ": ")))
    rows.append(("webhook deliveries", _counts(dict(sorted(result.deliveries.items())), ": ")))
    rows.append(("webhook events", _counts(result.webhook_events)))
    rows += [(f"{kind} events", _counts(counts)) for kind, counts in sorted(result.event_kinds.items())]
    rows += soak_tenants.rows(result.flood) if result.flood is not None else []
    rows.append(("duration", f"{result.duration_s:.0f} s in all"))
    return rows


def _memory_rows(result: Result) -> list[str]:
    rounds = max((len(m.round_end_mb) for m in result.memory), default=0)
    lines = [
        "| process | start (idle) | " + "".join(f"end of round {i + 1} | " for i in range(rounds)) + "peak | verdict |",
        "| --- | --- | " + "--- | " * rounds + "--- | --- |",
    ]
    for m in result.memory:
        flat, how = memory_verdict(m, result.config.memory_tolerance)
        ends = "".join(f"{mb:.1f} | " for mb in m.round_end_mb)
        lines.append(f"| {m.process} | {m.start_mb:.1f} | {ends}{m.peak_mb:.1f} | {_verdict_word(flat)}: {how} |")
    return lines


def _timeline(result: Result, rows: int = 12) -> list[str]:
    """The sampled RSS at about `rows` evenly spaced instants of the rounds."""
    if not result.trace:
        return []
    names = list(result.trace[0][1])
    step = max(1, len(result.trace) // rows)
    picked = result.trace[::step] + ([result.trace[-1]] if (len(result.trace) - 1) % step else [])
    lines = ["| s into the rounds | " + " | ".join(names) + " |", "| --- | " + "--- | " * len(names)]
    lines += [f"| {t:.0f} | " + " | ".join(f"{mb.get(n, 0):.1f}" for n in names) + " |" for t, mb in picked]
    return lines


def report(result: Result, failed: list[str]) -> str:
    meta = result.meta
    load = meta.get("load", (0.0,))[0]
    verdict = "**PASSED**" if not failed else "**FAILED**:\n\n" + "\n".join(f"- {f}" for f in failed)
    lines = [
        "# `make soak` results",
        "",
        f"{meta.get('date', '?')}, commit {meta.get('commit', '?')}; {meta.get('cpus', '?')} CPUs, load average "
        f"{load:.2f} at the start; {meta.get('servers', '')}; the run took {result.duration_s:.0f} s. How to run it "
        "and what is checked: [README.md](README.md#make-soak).",
        "",
        verdict,
        "",
        "## What was run",
        "",
        _what_was_run(result.config),
        "",
        "## Counts",
        "",
        "| what | count |",
        "| --- | --- |",
        *(f"| {what} | {count} |" for what, count in _count_rows(result)),
        "",
        "## Memory (RSS, MB)",
        "",
        *_memory_rows(result),
        "",
        memory_note(result),
        "",
        *_timeline(result),
        "",
    ]
    return "\n".join(lines)


def _verdict_word(flat: bool | None) -> str:
    return "-" if flat is None else "flat" if flat else "GREW"


def memory_note(result: Result) -> str:
    c = result.config
    later_tasks = max(1, c.users * (len(result.rounds) - 1))
    threshold = ", ".join(f"{m.process} {m.round_end_mb[0] * c.memory_tolerance * 1024 / later_tasks:.0f} KB"
                          for m in result.memory)  # fmt: skip
    return (
        f"Sampled every {c.sample_every_s} s ({len(result.trace)} samples); start and ends are taken idle "
        f"({c.settle_s:g} s after the work is done), the peak is the kernel's high-water mark. Verdict: flat when "
        f"the RSS at the end is within {c.memory_tolerance:.0%} of the RSS at the end of round 1. Round 1 runs every "
        "code path and holds the largest working set (first syncs carry all the rows), so a bounded process ends "
        "every later round where it ended the first, give or take the allocator's fragmentation; what a leak keeps "
        "grows with every task. "
        + (
            f"Over the later rounds' {later_tasks:,} tasks, the tolerance lets through a leak of at most about "
            f"{threshold} per task. "
            + (
                "Every round stored rows (`--fresh-users`), so memory kept per stored row would show too."
                if c.fresh_users
                else "Re-syncs store few rows: `--fresh-users` (rows stored every round) also looks for memory kept "
                "per stored row."
            )
            if len(result.rounds) > 1
            else "With one round there is nothing to compare: no verdict."
        )
    )
