"""`make bench` (after bench.run), or `python -m bench.apple_health`: the import of a generated
Apple Health export of about 1 GB (export.xml, uncompressed) through the real API and one real
worker, against PostgreSQL. Prints and writes bench/apple_health.md: records (Record, Workout and
ActivitySummary elements) parsed and stored per second of the task's run, rows stored, and the
peak memory (VmHWM) of the worker and of the API that took the upload.

Goal (issue 17): at least 100,000 records/s, peak memory under 200 MB. `--mb N` sizes the export.
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from bench.harness import DATA_DIR, ROOT, Processes, Run, bench_run, cpu_seconds, proc_status_kb, servers
from wearsync.sim.apple_health import ExportSummary, days_for, write_export

GOAL_RECORDS_PER_S, GOAL_PEAK_MB = 100_000, 200


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def export_of(mb: int) -> tuple[Path, ExportSummary]:
    """The generated export (kept under .wearsync/bench: the generator is deterministic)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"apple-health-{mb}mb.zip"
    log(f"writing a {mb} MB export to {path} ...")
    started = time.monotonic()
    summary = write_export(path, days=days_for(mb << 20), compresslevel=1)
    xml_mb, zip_mb = summary.xml_bytes / 2**20, summary.zip_bytes / 2**20
    log(f"    {summary.records:,} records, {xml_mb:.0f} MB of XML, {zip_mb:.0f} MB zipped,"
        f" in {time.monotonic() - started:.0f} s")  # fmt: skip
    return path, summary


async def measure(run: Run, path: Path, summary: ExportSummary) -> str:
    imports_dir = DATA_DIR / "imports"
    async with run.deployment("apple-health", env={"WEARSYNC_IMPORT_DIR": str(imports_dir)}) as deployment:
        user_id = await run.api(deployment).create_user("apple-health")
        worker_pid = deployment.workers[0].pid
        worker_cpu = cpu_seconds(worker_pid)
        log("uploading ...")
        with path.open("rb") as body:
            url = f"{deployment.api_url}/api/v1/users/{user_id}/imports/apple-health"
            headers = {"X-API-Key": run.key, "Content-Type": "application/zip"}
            resp = await run.session.post(url, data=body, headers=headers)
        answer = await resp.json()
        assert resp.status == 202, answer
        task_id = uuid.UUID(answer["task_id"])
        log(f"importing (task {task_id}) ...")
        while True:
            task = await run.db.fetchrow("SELECT * FROM sync_tasks WHERE id = $1", task_id)
            assert task is not None
            if task["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.5)
        assert task["status"] == "succeeded", task["error"]
        worker_cpu = cpu_seconds(worker_pid) - worker_cpu
        backends = await run.db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        postgres_cpu = sum(cpu_seconds(r["pid"]) for r in backends)  # since each connected: about the import
        worker_peak_mb = proc_status_kb(worker_pid, "VmHWM") / 1024
        api_peak_mb = proc_status_kb(deployment.api.pid, "VmHWM") / 1024
    seconds = (task["finished_at"] - task["started_at"]).total_seconds()
    rows = await run.row_counts(user_id)
    stored = sum(rows.values())
    rate = summary.records / seconds
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    xml_mb, zip_mb = summary.xml_bytes / 2**20, summary.zip_bytes / 2**20
    per_cpu = summary.records / worker_cpu
    pg_us = 1e6 * postgres_cpu / summary.records
    total_us = 1e6 * (worker_cpu + postgres_cpu) / summary.records
    ceiling = summary.records / max(worker_cpu, postgres_cpu)
    all_cpus = (os.cpu_count() or 1) * 1e6 / total_us
    verdict = "met" if rate >= GOAL_RECORDS_PER_S else "missed"
    memory = "met" if max(worker_peak_mb, api_peak_mb) < GOAL_PEAK_MB else "missed"
    return f"""# Apple Health import: measured

`make bench` (bench/apple_health.py): a generated export (`wearsync.sim.apple_health`, seed 1) uploaded
to the real API and imported by one real worker into PostgreSQL, on this machine ({os.cpu_count()} CPUs,
load average {load} at the end, shared with whatever else ran).

| measure | value | goal |
| --- | --- | --- |
| export.xml | {xml_mb:,.0f} MB ({zip_mb:,.0f} MB zipped), {summary.days} days | 1 GB |
| records parsed and stored (Record, Workout, ActivitySummary) | {summary.records:,} in {seconds:.1f} s | |
| **rate** | **{rate:,.0f} records/s** ({stored / seconds:,.0f} rows/s) | >= {GOAL_RECORDS_PER_S:,} ({verdict}) |
| CPU: worker / PostgreSQL backends | {worker_cpu:.0f} s ({per_cpu:,.0f} records/CPU-s) / {postgres_cpu:.0f} s | |
| rows stored | {stored:,}: {", ".join(f"{t} {n:,}" for t, n in rows.items() if n)} | |
| peak memory of the worker (VmHWM) | {worker_peak_mb:.0f} MB | < {GOAL_PEAK_MB} ({memory}) |
| peak memory of the API (VmHWM, took the upload) | {api_peak_mb:.0f} MB | < {GOAL_PEAK_MB} |

The wall-clock rate depends on what else the machine runs; the CPU it took does not. The worker
(parsing in one thread, encoding COPY data in the other, one GIL) spent {1e6 / per_cpu:.1f} µs of CPU
per record and PostgreSQL {pg_us:.1f} µs, {total_us:.1f} µs in all: on {os.cpu_count()} idle CPUs, with the worker and
PostgreSQL running side by side (they do: the parser reads the next batch while the last one is
written), the rate is bounded by the busier of the two, about {ceiling:,.0f} records/s, and by
{os.cpu_count()} / {total_us:.1f} µs = {all_cpus:,.0f} records/s with every CPU busy.
"""


async def main_async(admin_dsn: str, redis_url: str, processes: Processes, path: Path, summary: ExportSummary) -> str:
    async with asyncio.timeout(3600), bench_run(admin_dsn, redis_url, processes) as run:
        return await measure(run, path, summary)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apple_health", description=__doc__)
    parser.add_argument("--mb", type=int, default=1024, help="size of export.xml, in MB")
    args = parser.parse_args()
    path, summary = export_of(args.mb)
    processes = Processes()
    try:
        with servers() as (admin_dsn, redis_url, origin):
            log(origin)
            text = asyncio.run(main_async(admin_dsn, redis_url, processes, path, summary))
    finally:
        processes.close()
    print(text)
    if args.mb == 1024:
        (ROOT / "bench" / "apple_health.md").write_text(text)
        log("wrote bench/apple_health.md")


if __name__ == "__main__":
    main()
