"""`make mutate`: mutation testing of the core with mutmut, and a report per module.

mutmut changes one thing at a time in the modules named (a comparison, a constant, a call left
out, ...) and runs only the tests that exercise the changed function (it maps tests to functions
in one traced run of the suite first), several mutants at once. A mutant no test notices
"survived": either a rule no test pins (write the test) or a change that cannot alter behaviour
(an equivalent mutant: list it in tests/equivalent_mutants.txt with a one-line reason).

    python -m tests.mutate                                  # the core modules, the whole suite
    python -m tests.mutate src/wearsync/providers/paging.py --tests tests/test_paging.py

One embedded PostgreSQL and Valkey serve every test run (each makes and drops its own database).
mutmut's work and the report (mutants/report.md) are kept in mutants/: delete it after the code or
the tests changed (mutmut reuses what it holds, and a stale copy can fail to start)."""

import argparse
import os
import signal
import sys
from collections import Counter
from pathlib import Path

# The core: pagination, rate limiting, record storage and its guards, job and task state (worker,
# reaper), webhook routing and processing, sync orchestration, token refresh.
CORE = [
    "src/wearsync/providers/paging.py",
    "src/wearsync/providers/ratelimit.py",
    "src/wearsync/db/records.py",
    "src/wearsync/worker.py",
    "src/wearsync/queue.py",
    "src/wearsync/tasks.py",
    "src/wearsync/webhooks.py",
    "src/wearsync/api/webhooks.py",
    "src/wearsync/sync.py",
    "src/wearsync/providers/tokens.py",
]
EQUIVALENT = Path(__file__).with_name("equivalent_mutants.txt")
REPORT = Path("mutants/report.md")
REQUIRED_SCORE = 90.0  # per module, equivalent mutants left out


def equivalent_mutants() -> dict[str, str]:
    """Mutant name -> why it cannot change behaviour, from tests/equivalent_mutants.txt."""
    listed = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(":")
            listed[name.strip()] = reason.strip()
    return listed


def report(modules: list[str]) -> tuple[str, bool]:
    """A table per module (killed, survived, timed out, ...) and the survivors not explained;
    whether every module reached REQUIRED_SCORE."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    equivalent = equivalent_mutants()
    lines = ["| module | mutants | killed | timed out | survived | equivalent | no tests | score |", "|---" * 8 + "|"]
    unexplained: list[str] = []
    all_pass = True
    for module in modules:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        statuses = {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}
        counts = Counter(
            "equivalent" if status == "survived" and name in equivalent else status for name, status in statuses.items()
        )
        detected = counts["killed"] + counts["timeout"]
        judged = detected + counts["survived"] + counts["suspicious"] + counts["no tests"]
        score = 100.0 * detected / judged if judged else 100.0
        all_pass &= score >= REQUIRED_SCORE
        lines.append(
            f"| {module} | {len(statuses)} | {counts['killed']} | {counts['timeout']} | {counts['survived']} "
            f"| {counts['equivalent']} | {counts['no tests']} | {score:.1f}% |"
        )
        unexplained += sorted(n for n, s in statuses.items() if s in ("survived", "suspicious") and n not in equivalent)
    text = "\n".join(lines) + "\n"
    if unexplained:
        text += "\nSurvivors to kill with a test (or to list, with a reason, in tests/equivalent_mutants.txt):\n"
        text += "".join(f"- {name} (`mutmut show {name}`)\n" for name in unexplained)
    return text, all_pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=CORE, help="source files to mutate (default: the core)")
    parser.add_argument("--tests", nargs="*", help="test files to choose from (default: the whole suite)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    args = parser.parse_args()

    from mutmut import configuration
    from mutmut.__main__ import _run

    from tests.servers import real_servers

    config = configuration.config()  # [tool.mutmut] in pyproject.toml; narrowed to what was asked
    config.only_mutate = list(args.modules)
    if args.tests:
        config.pytest_add_cli_args_test_selection = list(args.tests)
    # Stopped (timeout, kill): still stop the embedded servers, which would outlive this process.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with real_servers() as (database_url, redis_url):
        os.environ |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        _run([], args.max_children)
    text, all_pass = report(list(args.modules))
    REPORT.write_text(text)
    print(f"\n{text}\n(written to {REPORT})")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
