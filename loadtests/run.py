"""Run the load test: fake upstream, real gateway, locust headless; bounded and loopback only.

    python -m loadtests.run [--users 20] [--spawn-rate 20] [--run-time 60s]
        [--out reports/loadtest] [--user-rps 0] [--chunks 20]

1. `loadtests.echo_upstream` (the benchmark's fast upstream with an echo mode and a
   PII tripwire) and `python -m ktproxy gateway run` start as child processes on free
   loopback ports. The gateway's config is written to a temporary directory: one
   OpenAI target at the upstream, the chain `[prompt-injection, pii-detector,
   audit-logger]`, the audit store in the same temporary directory.
2. Once the gateway's `/readyz` answers 200, locust runs headless with
   `loadtests/locustfile.py` for `--run-time`, writing `<out>/loadtest_*.csv` and
   `<out>/loadtest.html`. Child logs go to `<out>/logs/`.
3. The gateway is stopped with SIGTERM (it drains and writes out its audit queue),
   then the upstream; `kt audit verify` checks the audit store's hash chains, and
   each request locust counted must be an audit record or a drop the gateway counted
   (`/metrics`; drops, when its audit queue is full, are reported, not failed).
4. A table per request kind is printed and `<out>/summary.json` written.

Every process started here is stopped by its PID on every way out (SIGTERM, then
SIGKILL after a timeout), including failures, Ctrl-C and SIGTERM to this runner.

Exit code: 0 when every request got what it should; 1 when locust counted failures
or a check after the run failed (a request kind never sent, PII seen by the upstream,
the gateway's exit status, the audit chains); 2 when the processes could not be
started, one died, or the run overran its bound; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from benchmarks.bench_proxy import BenchError, Child, free_ports, stop_all
from loadtests.report import CSV_PREFIX, Audit, report, say
from loadtests.workload import NAMES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = PROJECT_ROOT / "loadtests" / "locustfile.py"
UPSTREAM_KEY = "sk-loadtest"
READY_TIMEOUT = 60.0  # seconds for a child to be ready
LOCUST_MARGIN = 60.0  # seconds locust may take beyond --run-time (start-up, stop, reports)
LOCUST_STOP_TIMEOUT = 5  # seconds locust lets running requests finish at the end
VERIFY_TIMEOUT = 60.0  # seconds for `kt audit verify`
MAX_RUN_SECONDS = 3600
MAX_USERS = 1000

CONFIG_TEMPLATE = """\
pack: {{name: loadtest, version: 1.0.0, enabled: true}}
gateway: {{host: 127.0.0.1, port: {gport}, drain_timeout: 10}}
providers:
  targets:
    - id: fast-upstream
      provider: openai
      model: gpt-4o
      base_url: http://127.0.0.1:{uport}
      secret_key_ref: {{env: LOADTEST_UPSTREAM_KEY}}
      max_connections: 256
policies:
  chain: [prompt-injection, pii-detector, audit-logger]
policy:
  pii-detector: {{action: redact}}
  audit-logger: {{sink: sqlite, path: {audit}, retention_days: 1}}
"""


class RunError(BenchError):
    """The run could not be carried out (exit 2), as opposed to finding failures (exit 1)."""


class Interrupted(Exception):
    """SIGTERM to the runner: unwinds like Ctrl-C so that the children are stopped."""


@dataclass(frozen=True)
class Options:
    """The command line, checked."""

    users: int
    spawn_rate: float
    run_seconds: int
    out: Path
    user_rps: float
    chunks: int


def parse_run_time(text: str) -> int:
    """Seconds from locust's forms (`90`, `20s`, `2m`, `1h30m`); ValueError otherwise."""
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 20s, 2m, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_args(argv: list[str] | None) -> Options:
    """Parse and bound the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=(
            "Load-test the gateway: start a fast fake upstream and a gateway on loopback, "
            "run locust headless against it, write CSV and HTML reports, stop everything."
        ),
    )
    parser.add_argument(
        "--users",
        "-u",
        type=int,
        default=20,
        help=f"concurrent users, {len(NAMES)}..{MAX_USERS} (one user class per request kind)",
    )
    parser.add_argument("--spawn-rate", "-r", type=float, default=20.0, help="users started/s")
    parser.add_argument(
        "--run-time", "-t", default="60s", help="how long the load runs (20s, 2m; max 1h)"
    )
    parser.add_argument(
        "--out", default="reports/loadtest", help="report directory (default reports/loadtest)"
    )
    parser.add_argument(
        "--user-rps",
        type=float,
        default=0.0,
        help="requests/s per user; 0 (default) sends each next request as soon as one ends",
    )
    parser.add_argument(
        "--chunks", type=int, default=20, help="content deltas per streamed reply (default 20)"
    )
    args = parser.parse_args(argv)
    try:
        run_seconds = parse_run_time(args.run_time)
    except ValueError as exc:
        parser.error(f"--run-time: {exc}")
    if not 1 <= run_seconds <= MAX_RUN_SECONDS:
        parser.error(f"--run-time must be between 1 s and {MAX_RUN_SECONDS} s")
    if not len(NAMES) <= args.users <= MAX_USERS:
        parser.error(f"--users must be between {len(NAMES)} and {MAX_USERS}")
    if not 0 < args.spawn_rate <= MAX_USERS:
        parser.error(f"--spawn-rate must be above 0 and at most {MAX_USERS}")
    if args.user_rps < 0:
        parser.error("--user-rps must not be negative")
    if not 1 <= args.chunks <= 10_000:
        parser.error("--chunks must be between 1 and 10000")
    return Options(
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_seconds=run_seconds,
        out=Path(args.out).resolve(),
        user_rps=args.user_rps,
        chunks=args.chunks,
    )


# ---------------------------------------------------------------------------
# The run


def child_env() -> dict[str, str]:
    """This environment, with the project importable and the upstream's key set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["LOADTEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    return env


def wait_http_ready(child: Child, url: str, timeout: float) -> None:
    """Poll `url` until it answers 200; RunError if `child` exits or after `timeout` s.

    The gateway's own readiness signal rather than its start-up line on stdout, which
    is for people and may change.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RunError(
        f"{url} not ready within {timeout:.0f} s (last: {last})\n" + child.describe_failure()
    )


def start_servers(opts: Options, tmp: Path, logs: Path, children: list[Child]) -> tuple[int, Path]:
    """Start upstream and gateway; return the gateway's port and its config file."""
    uport, gport = free_ports(2)
    env = child_env()
    upstream = Child(
        "upstream",
        [sys.executable, "-m", "loadtests.echo_upstream", "--port", str(uport)]
        + ["--chunks", str(opts.chunks)],
        env,
        logs,
    )
    children.append(upstream)
    asyncio.run(upstream.wait_ready(f"upstream listening on {uport}", READY_TIMEOUT))

    config = tmp / "loadtest-policy.yaml"
    audit = json.dumps(str(tmp / "audit.db"))  # a JSON string is a YAML string
    config.write_text(CONFIG_TEMPLATE.format(gport=gport, uport=uport, audit=audit), "utf-8")
    gateway = Child(
        "gateway",
        [sys.executable, "-m", "ktproxy", "gateway", "run", "--policy-config", str(config)]
        + ["--port", str(gport), "--log-level", "warning"],
        env,
        logs,
    )
    children.append(gateway)
    wait_http_ready(gateway, f"http://127.0.0.1:{gport}/readyz", READY_TIMEOUT)
    say(f"upstream pid {upstream.pid} on :{uport}, gateway pid {gateway.pid} on :{gport}")
    return gport, config


def run_locust(opts: Options, gport: int, logs: Path, children: list[Child]) -> int:
    """Run locust headless to its end (bounded); its exit code."""
    prefix = opts.out / CSV_PREFIX
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        f"http://127.0.0.1:{gport}",
        "-u",
        str(opts.users),
        "-r",
        f"{opts.spawn_rate:g}",
        "-t",
        f"{opts.run_seconds}s",
        "--stop-timeout",
        str(LOCUST_STOP_TIMEOUT),
        "--csv",
        str(prefix),
        "--html",
        str(opts.out / f"{CSV_PREFIX}.html"),
        "--exit-code-on-error",
        "1",
        "--only-summary",
        "--user-rps",
        f"{opts.user_rps:g}",
    ]
    locust = Child("locust", argv, child_env(), logs)
    children.append(locust)
    say(
        f"locust pid {locust.pid}: {opts.users} users (+{opts.spawn_rate:g}/s) "
        f"for {opts.run_seconds} s ..."
    )
    deadline = time.monotonic() + opts.run_seconds + LOCUST_MARGIN
    while True:
        try:
            return locust.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        for child in children[:-1]:
            child.check_alive()  # a dead gateway or upstream ends the run at once
        if time.monotonic() > deadline:
            raise RunError(
                f"locust still running {opts.run_seconds + LOCUST_MARGIN:.0f} s after it "
                "started.\n" + locust.describe_failure()
            )


_DROPPED = re.compile(
    r'^ktproxy_audit_records(?:_total)?\{[^}]*outcome="dropped"[^}]*\}\s+([0-9.e+]+)\s*$', re.M
)


def audit_dropped(gport: int) -> int | None:
    """Audit records the gateway dropped (queue full), from its `/metrics`; None if unknown."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gport}/metrics", timeout=10) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    found = _DROPPED.findall(text)
    return int(sum(float(n) for n in found)) if found else None


def stop_and_check(children: list[Child], problems: list[str]) -> int | None:
    """Stop gateway then upstream; note a bad gateway exit; the upstream's PII count."""
    by_name = {child.name: child for child in children}
    gateway, upstream = by_name["gateway"], by_name["upstream"]
    gateway.check_alive()  # both must have lived through the load
    upstream.check_alive()
    gateway.stop()
    if gateway.proc.returncode != 0:
        problems.append(
            f"gateway exited with code {gateway.proc.returncode} on SIGTERM\n"
            + gateway.describe_failure()
        )
    upstream.stop()
    match = re.search(r"pii values received: (\d+)", upstream.tail(upstream.stdout_path))
    leaks = int(match.group(1)) if match else None
    if leaks:
        problems.append(f"the upstream received {leaks} request(s) holding a PII value")
    return leaks


def verify_audit(config: Path, problems: list[str]) -> int | None:
    """`kt audit verify` on the run's store; the number of records, None if unknown."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ktproxy", "audit", "verify", "--policy-config", str(config)],
            cwd=PROJECT_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        problems.append(f"kt audit verify did not finish within {VERIFY_TIMEOUT:.0f} s")
        return None
    if done.returncode != 0:
        problems.append(f"kt audit verify failed:\n{done.stdout}{done.stderr}".strip())
        return None
    return sum(int(n) for n in re.findall(r"^chain .*: (\d+) records", done.stdout, re.M))


def load_test(opts: Options) -> int:
    """The whole run; every child is stopped before this returns or raises."""
    opts.out.mkdir(parents=True, exist_ok=True)
    logs = opts.out / "logs"
    logs.mkdir(exist_ok=True)
    for old in [*opts.out.glob(f"{CSV_PREFIX}*"), opts.out / "summary.json"]:
        old.unlink(missing_ok=True)  # a failed run must not leave the last run's figures
    children: list[Child] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ktproxy-loadtest-") as tmp:
        try:
            gport, config = start_servers(opts, Path(tmp), logs, children)
            started = time.monotonic()
            code = run_locust(opts, gport, logs, children)
            elapsed = time.monotonic() - started
            dropped = audit_dropped(gport)
            leaks = stop_and_check(children, problems)
            records = verify_audit(config, problems)
        finally:
            with signals_ignored():
                stop_all(children)
    if locust_cpu_bound(logs):
        say("note: locust reported CPU above 90%: the load generator limits these figures")
    if records is not None:
        say(f"audit: {records} records, hash chains verified")
    stats = opts.out / f"{CSV_PREFIX}_stats.csv"
    if not stats.exists():
        raise RunError(f"locust wrote no statistics (exit code {code}): {stats} is missing")
    settings = {
        "users": opts.users,
        "spawn_rate": opts.spawn_rate,
        "run_seconds": opts.run_seconds,
        "user_rps": opts.user_rps,
        "locust_seconds": round(elapsed, 1),
    }
    audit = Audit(records=records, dropped=dropped)
    return report(opts.out, settings, code, audit, leaks, problems)


def locust_cpu_bound(logs: Path) -> bool:
    """Whether locust warned that its own CPU use was the limit."""
    try:
        return "CPU usage above" in (logs / "locust.stderr").read_text("utf-8", "replace")
    except OSError:
        return False


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let no second Ctrl-C or SIGTERM cut the stopping of the children short.

    Stopping is bounded anyway (SIGKILL after a timeout), and the children run in
    sessions of their own, so the terminal's signals never reach them directly.
    """
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def main(argv: list[str] | None = None) -> int:
    """Run and map the outcome to an exit code (see the module docstring)."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return load_test(opts)
    except BenchError as exc:
        print(f"load test error: {exc}", file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print("load test interrupted; every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
