"""What a load-test run found: locust's figures, the cross-checks, `summary.json`.

The runner hands over what it measured; this module reads locust's CSV files,
decides which findings are failures, prints one line per request kind and writes
the machine-readable summary next to locust's own reports.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.workload import NAMES

CSV_PREFIX = "loadtest"  # locust's --csv prefix and the HTML report's name


@dataclass
class Endpoint:
    """One row of locust's statistics (times in ms, as locust rounds them)."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Audit:
    """The gateway's audit store after the run: records verified, drops it counted.

    None where the figure could not be had (verification failed, no `/metrics`).
    """

    records: int | None
    dropped: int | None


def say(message: str) -> None:
    """Progress and results, flushed at once (make buffers nothing, but pipes do)."""
    print(message, flush=True)


def read_stats(path: Path) -> list[Endpoint]:
    """Locust's `_stats.csv`: one `Endpoint` per request name, `Aggregated` last."""

    def num(row: dict[str, str], key: str) -> float:
        try:
            return float(row.get(key) or 0)
        except ValueError:  # "N/A" when a name has no requests
            return 0.0

    with open(path, newline="", encoding="utf-8") as f:
        return [
            Endpoint(
                name=row["Name"],
                requests=int(num(row, "Request Count")),
                failures=int(num(row, "Failure Count")),
                rps=round(num(row, "Requests/s"), 1),
                p50_ms=num(row, "50%"),
                p90_ms=num(row, "90%"),
                p99_ms=num(row, "99%"),
                max_ms=round(num(row, "Max Response Time"), 1),
            )
            for row in csv.DictReader(f)
        ]


def read_failures(path: Path, limit: int = 10) -> list[str]:
    """The most frequent failures from locust's `_failures.csv`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: -int(r.get("Occurrences") or 0))
    except OSError:
        return []
    return [f"{r['Occurrences']:>7} x {r['Name']}: {r['Error'][:300]}" for r in rows[:limit]]


def table(rows: list[Endpoint]) -> list[str]:
    """The per-request-kind figures, a header and one line each."""
    lines = [
        f"{'request':<18}{'count':>9}{'fail':>7}{'req/s':>9}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    ]
    lines += [
        f"{r.name:<18}{r.requests:>9}{r.failures:>7}{r.rps:>9.1f}"
        f"{r.p50_ms:>9g}{r.p90_ms:>9g}{r.p99_ms:>9g}{r.max_ms:>9g}"
        for r in rows
    ]
    return lines


def check_audit(requests: int, audit: Audit, problems: list[str]) -> None:
    """Every request locust counted, blocked ones included, is a record or a counted drop.

    Dropping when the writer's queue is full is the configured behaviour
    (`on_overflow: drop`), so drops are reported, not failed; a request that is
    neither written nor counted as dropped is a failure.
    """
    if audit.records is None:
        return  # verification failed: already a problem
    if audit.dropped is None:
        say("note: /metrics gave no audit drop count; expecting one record per request")
    dropped = audit.dropped or 0
    if audit.records + dropped != requests:
        problems.append(f"{audit.records} audit records + {dropped} drops for {requests} requests")
    elif dropped:
        say(
            f"WARNING: the gateway dropped {dropped} audit records of {requests} "
            f"({100 * dropped / requests:.1f} %): its audit queue was full"
        )


def report(
    out: Path,
    settings: dict[str, Any],
    code: int,
    audit: Audit,
    leaks: int | None,
    problems: list[str],
) -> int:
    """Check locust's figures, print them, write `summary.json`; the exit code (0 or 1)."""
    rows = read_stats(out / f"{CSV_PREFIX}_stats.csv")
    seen = {r.name: r for r in rows}
    for name in NAMES:
        if name not in seen or seen[name].requests == 0:
            problems.append(f"no `{name}` request was sent")
    check_audit(seen["Aggregated"].requests if "Aggregated" in seen else 0, audit, problems)
    for line in table(rows):
        say(line)
    failures = read_failures(out / f"{CSV_PREFIX}_failures.csv")
    if failures:
        say("failures:\n" + "\n".join(failures))
    if code != 0:
        problems.append(f"locust exited with code {code} (failures or errors counted)")
    summary = {
        **settings,
        "endpoints": [asdict(r) for r in rows],
        "audit_records": audit.records,
        "audit_dropped": audit.dropped,
        "pii_reached_upstream": leaks,
        "problems": problems,
        "ok": not problems,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    say(f"reports: {out}/{CSV_PREFIX}.html, {CSV_PREFIX}_*.csv, summary.json")
    if problems:
        say("LOAD TEST FAILED:\n- " + "\n- ".join(problems))
        return 1
    say("load test passed")
    return 0
