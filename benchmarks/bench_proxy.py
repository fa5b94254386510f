"""What the gateway costs: the same load sent to a fast upstream directly and through it.

The run starts `benchmarks.fast_upstream` and a ktproxy gateway in front of it as
child processes on free loopback ports, then drives both targets from this
process with an aiohttp load generator: `--concurrency` workers, each sending the
same chat completion request until `--requests` are used, every response checked
(status 200; a stream must end with `data: [DONE]`).

Absolute numbers on a shared machine drift from minute to minute, so the figures
that matter are same-run comparisons: throughput ratio and added latency, gateway
minus direct. To let drift hit both targets alike, each target is warmed up and
the measured rounds alternate direct, gateway, direct, gateway...

    python -m benchmarks.bench_proxy [--requests 2000] [--concurrency 10] [--chunks 20]
        [--rounds 3] [--mode both|nonstream|stream] [--json]

Exit code: 0 when every response was correct, 1 when any was not (they are listed),
2 when the processes could not be started or the run exceeded `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_KEY = "sk-bench"
DONE_TAIL = b"data: [DONE]\n\n"
READY_TIMEOUT = 60.0  # seconds for a child to print its ready line
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
REQUEST_TIMEOUT = 30.0  # one request, response fully read
PROMPT = "In one sentence, why put a policy gateway in front of LLM providers?"
DESIGN_ADDED_P50_MS = 1.0
MODES = {"nonstream": "non-streaming", "stream": "streaming"}
TARGETS = ("direct", "gateway")

CONFIG_TEMPLATE = """\
gateway: {{host: 127.0.0.1, port: {gport}}}
providers:
  targets:
    - id: bench
      provider: openai
      model: gpt-4o
      base_url: http://127.0.0.1:{uport}
      secret_key_ref: {{env: BENCH_UPSTREAM_KEY}}
      max_connections: 256
policies:
  chain: [{chain}]
"""


class BenchError(Exception):
    """A failure that ends the run with a message for the user rather than a traceback."""


@dataclass(frozen=True)
class Options:
    """The command line, checked."""

    requests: int
    concurrency: int
    chunks: int
    rounds: int
    warmup: int
    modes: tuple[str, ...]
    as_json: bool
    timeout: float
    chain: str = ""


# ---------------------------------------------------------------------------
# Child processes


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open at once so they cannot repeat)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class Child:
    """A server subprocess whose output goes to files.

    Files, not pipes: nobody reads the pipes during the load, and a child that logs
    would block once a pipe buffer filled, which would look like gateway latency.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Own session: a terminal's Ctrl-C reaches only the benchmark, which then
            # stops its children itself, in order.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def tail(self, path: Path, limit: int = 4000) -> str:
        """The last `limit` characters a child wrote to one of its files."""
        try:
            text = path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""
        return text.strip()

    def describe_failure(self) -> str:
        """The child's exit status and output, for an error message."""
        code = self.proc.poll()
        status = "still running" if code is None else f"exit code {code}"
        parts = [f"{self.name} (pid {self.pid}, {status})"]
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = self.tail(path)
            if text:
                parts.append(f"--- {self.name} {label} ---\n{text}")
        return "\n".join(parts)

    async def wait_ready(self, line: str, timeout: float) -> None:
        """Return once the child printed `line`; raise if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines = self.stdout_path.read_text("utf-8", "replace").splitlines()
            except OSError:
                lines = []
            if line in (text.strip() for text in lines):
                return
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited before it was ready.\n" + self.describe_failure()
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} did not print {line!r} within {timeout:.0f} s.\n"
                    + self.describe_failure()
                )
            await asyncio.sleep(0.05)

    def check_alive(self) -> None:
        """Raise if the child has exited (its output says why)."""
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited during the run.\n" + self.describe_failure())

    def peak_rss_kib(self) -> int | None:
        """Peak resident set size (VmHWM) in KiB, None if it cannot be read."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for text in status:
                    if text.startswith("VmHWM:"):
                        return int(text.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time so far, None if it cannot be read."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
                # Fields after the command name, which may itself contain spaces.
                fields = stat.read().rpartition(")")[2].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            return None
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it has not exited after `STOP_TIMEOUT`."""
        if self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


def stop_all(children: list[Child]) -> None:
    """Stop the children, gateway first so it never sees its upstream vanish mid-request."""
    for child in reversed(children):
        child.stop()


# ---------------------------------------------------------------------------
# Load generation


@dataclass
class RunResult:
    """What one load run against one target produced."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, correct responses only
    ttfbs: list[float] = field(default_factory=list)  # streams: until the first body byte
    errors: Counter[str] = field(default_factory=Counter)
    cpu: float | None = None  # CPU seconds a watched process used during the measured part


async def _one_request(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, result: RunResult
) -> None:
    """Send one request, read the whole response and record it as a latency or an error."""
    start = time.perf_counter()
    try:
        async with session.post(url, data=body) as resp:
            if resp.status != 200:
                text = await resp.content.read(300)
                result.errors[f"HTTP {resp.status}: {text[:200]!r}"] += 1
                return
            if stream:
                first = await resp.content.readany()
                first_at = time.perf_counter()
                if not first:
                    result.errors["stream: empty body"] += 1
                    return
                # Keep only as much of the end as the [DONE] check needs.
                tail = first[-len(DONE_TAIL) :]
                while chunk := await resp.content.readany():
                    tail = (tail + chunk)[-len(DONE_TAIL) :]
                end = time.perf_counter()
                if tail != DONE_TAIL:
                    result.errors[f"stream: does not end with data: [DONE] (ends {tail!r})"] += 1
                    return
                result.ttfbs.append(first_at - start)
            else:
                data = await resp.read()
                end = time.perf_counter()
                if b'"chat.completion"' not in data:
                    result.errors[f"non-stream: not a chat.completion: {data[:120]!r}"] += 1
                    return
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        result.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
        return
    result.latencies.append(end - start)


async def _drive(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    budget: int,
    concurrency: int,
    result: RunResult,
) -> None:
    """`concurrency` workers share a budget of `budget` requests."""
    remaining = budget

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1  # no await between test and decrement: never overspends
            await _one_request(session, url, body, stream, result)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, budget))))


async def run_load(
    url: str,
    body: bytes,
    stream: bool,
    requests: int,
    concurrency: int,
    prime: int,
    cpu_probe: Callable[[], float | None] | None = None,
) -> RunResult:
    """One measured run on a fresh session.

    A fresh session per run means no connection from an earlier round can have
    been closed by the server while idle; the `prime` unrecorded requests open the
    pool's connections first so that no connect time lands in the percentiles.
    """
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    headers = {"Content-Type": "application/json"}
    result = RunResult()
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        if prime:
            await _drive(session, url, body, stream, prime, concurrency, result)
            result.latencies.clear()
            result.ttfbs.clear()
        cpu_before = cpu_probe() if cpu_probe else None
        start = time.perf_counter()
        await _drive(session, url, body, stream, requests, concurrency, result)
        result.elapsed = time.perf_counter() - start
        cpu_after = cpu_probe() if cpu_probe else None
    if cpu_before is not None and cpu_after is not None:
        result.cpu = cpu_after - cpu_before
    return result


# ---------------------------------------------------------------------------
# Statistics and report


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating linearly between closest ranks."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class TargetStats:
    """One target's measured rounds of one mode, pooled."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    cpu: float | None = None

    def add(self, run: RunResult) -> None:
        """Pool one round into the totals."""
        self.elapsed += run.elapsed
        self.latencies += run.latencies
        self.ttfbs += run.ttfbs
        self.round_rps.append(len(run.latencies) / run.elapsed if run.elapsed else 0.0)
        if run.cpu is not None:
            self.cpu = (self.cpu or 0.0) + run.cpu

    def summary(self, stream: bool) -> dict[str, Any]:
        """Requests/s (correct responses over wall time) and latency percentiles in ms.

        A percentile with no correct response to take it from is None (JSON null).
        """
        lat = sorted(self.latencies)
        out: dict[str, Any] = {
            "requests": len(lat),
            "rps": round(len(lat) / self.elapsed, 1) if self.elapsed else 0.0,
            "round_rps": [round(r, 1) for r in self.round_rps],
            "p50_ms": _ms(lat, 50),
            "p90_ms": _ms(lat, 90),
            "p99_ms": _ms(lat, 99),
        }
        if stream:
            ttfb = sorted(self.ttfbs)
            out["ttfb_p50_ms"] = _ms(ttfb, 50)
            out["ttfb_p99_ms"] = _ms(ttfb, 99)
        if self.cpu is not None and lat:
            out["cpu_us_per_request"] = round(self.cpu / len(lat) * 1e6, 1)
        return out


def _ms(sorted_values: Sequence[float], q: float) -> float | None:
    return round(percentile(sorted_values, q) * 1000, 3) if sorted_values else None


def _diff(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def compare(direct: dict[str, Any], gateway: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The same-run figures: gateway relative to direct."""
    out: dict[str, Any] = {
        "throughput_ratio": round(gateway["rps"] / direct["rps"], 3) if direct["rps"] else None,
        "added_p50_ms": _diff(gateway["p50_ms"], direct["p50_ms"]),
        "added_p99_ms": _diff(gateway["p99_ms"], direct["p99_ms"]),
    }
    if stream:
        out["added_ttfb_p50_ms"] = _diff(gateway["ttfb_p50_ms"], direct["ttfb_p50_ms"])
    return out


def request_body(stream: bool) -> bytes:
    """The one request every worker sends."""
    payload: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if stream:
        payload["stream"] = True
    return orjson.dumps(payload)


def progress(message: str) -> None:
    """Per-round lines go to stderr so that `--json` output stays one object."""
    print(message, file=sys.stderr, flush=True)


async def benchmark(opts: Options, children: list[Child]) -> dict[str, Any]:
    """Start both servers, run every mode, and return the report as plain data."""
    with tempfile.TemporaryDirectory(prefix="ktproxy-bench-") as tmp:
        try:
            return await _benchmark(opts, children, Path(tmp))
        finally:
            # Stopped here too (not only by the caller) so the log files still exist
            # while they go down.
            stop_all(children)


async def _benchmark(opts: Options, children: list[Child], tmp: Path) -> dict[str, Any]:
    uport, gport = free_ports(2)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["BENCH_UPSTREAM_KEY"] = UPSTREAM_KEY

    upstream = Child(
        "upstream",
        [
            sys.executable,
            "-m",
            "benchmarks.fast_upstream",
            "--port",
            str(uport),
            "--chunks",
            str(opts.chunks),
        ],
        env,
        tmp,
    )
    children.append(upstream)
    await upstream.wait_ready(f"upstream listening on {uport}", READY_TIMEOUT)

    config = tmp / "bench-policy.yaml"
    config.write_text(CONFIG_TEMPLATE.format(gport=gport, uport=uport, chain=opts.chain), "utf-8")
    gateway = Child(
        "gateway",
        [
            sys.executable,
            "-m",
            "ktproxy",
            "gateway",
            "run",
            "--policy-config",
            str(config),
            "--port",
            str(gport),
        ],
        env,
        tmp,
    )
    children.append(gateway)
    await gateway.wait_ready(f"Gateway listening on http://localhost:{gport}", READY_TIMEOUT)
    progress(f"upstream pid {upstream.pid} on :{uport}, gateway pid {gateway.pid} on :{gport}")

    urls = {
        "direct": f"http://127.0.0.1:{uport}/v1/chat/completions",
        "gateway": f"http://127.0.0.1:{gport}/v1/chat/completions",
    }
    errors: Counter[str] = Counter()
    modes: dict[str, Any] = {}
    for mode in opts.modes:
        stream = mode == "stream"
        body = request_body(stream)
        if opts.warmup:
            for target in TARGETS:
                warm = await run_load(urls[target], body, stream, opts.warmup, opts.concurrency, 0)
                for kind, count in warm.errors.items():
                    errors[f"{mode} {target} (warm-up): {kind}"] += count
                progress(
                    f"[{mode}] warm-up {target}: {opts.warmup} requests, "
                    f"{sum(warm.errors.values())} errors"
                )
        stats = {target: TargetStats() for target in TARGETS}
        for n in range(1, opts.rounds + 1):
            for target in TARGETS:
                run = await run_load(
                    urls[target],
                    body,
                    stream,
                    opts.requests,
                    opts.concurrency,
                    prime=opts.concurrency,
                    cpu_probe=gateway.cpu_seconds if target == "gateway" else None,
                )
                for child in children:
                    child.check_alive()
                for kind, count in run.errors.items():
                    errors[f"{mode} {target}: {kind}"] += count
                stats[target].add(run)
                lat = sorted(run.latencies)
                progress(
                    f"[{mode}] round {n}/{opts.rounds} {target:>7}: "
                    f"{stats[target].round_rps[-1]:8.1f} req/s  "
                    f"p50 {percentile(lat, 50) * 1000:7.3f} ms  "
                    f"p99 {percentile(lat, 99) * 1000:7.3f} ms  "
                    f"errors {sum(run.errors.values())}"
                )
        direct = stats["direct"].summary(stream)
        through = stats["gateway"].summary(stream)
        modes[mode] = {"direct": direct, "gateway": through, **compare(direct, through, stream)}

    return {
        "settings": {
            "requests": opts.requests,
            "concurrency": opts.concurrency,
            "chunks": opts.chunks,
            "rounds": opts.rounds,
            "warmup": opts.warmup,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "modes": modes,
        "gateway_peak_rss_kib": gateway.peak_rss_kib(),
        "design_target_added_p50_ms": DESIGN_ADDED_P50_MS,
        "errors": {"total": sum(errors.values()), "by_kind": dict(errors.most_common())},
    }


def _fmt(value: float | None, spec: str, width: int = 10) -> str:
    return format(value, spec).rjust(width) if value is not None else "n/a".rjust(width)


def format_report(report: dict[str, Any]) -> str:
    """The report as a human-readable table."""
    s = report["settings"]
    target_ms = report["design_target_added_p50_ms"]
    lines = [
        f"ktproxy proxy benchmark: {s['requests']} requests x {s['rounds']} round(s) per "
        f"target, concurrency {s['concurrency']}, {s['chunks']} chunks per stream, "
        f"warm-up {s['warmup']}, {s['cpus']} CPU(s)",
    ]
    for mode, res in report["modes"].items():
        stream = mode == "stream"
        lines.append("")
        header = f"{MODES[mode]:<18}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
        if stream:
            header += f"{'ttfb p50':>10}"
        lines.append(header)
        for target, label in (("direct", "direct"), ("gateway", "through gateway")):
            r = res[target]
            row = f"  {label:<16}{_fmt(r['rps'], '.1f')}" + "".join(
                _fmt(r[key], ".3f") for key in ("p50_ms", "p90_ms", "p99_ms")
            )
            if stream:
                row += _fmt(r["ttfb_p50_ms"], ".3f")
            lines.append(row)
        derived = [
            f"throughput gateway/direct {_fmt(res['throughput_ratio'], '.3f', 0)}x",
            f"added p50 {_fmt(res['added_p50_ms'], '+.3f', 0)} ms",
            f"added p99 {_fmt(res['added_p99_ms'], '+.3f', 0)} ms",
        ]
        if stream:
            derived.append(f"added ttfb p50 {_fmt(res['added_ttfb_p50_ms'], '+.3f', 0)} ms")
        lines.append("  " + ", ".join(derived))
        cpu = res["gateway"].get("cpu_us_per_request")
        if cpu is not None:
            lines.append(f"  gateway CPU {cpu:.0f} us per request")
        added = res["added_p50_ms"]
        met = "n/a" if added is None else "met" if added <= target_ms else "NOT met"
        note = ""
        if s["concurrency"] > 1:
            # Under load, added latency includes queueing behind the gateway's CPU work.
            note = f" (under load, concurrency {s['concurrency']})"
        lines.append(f"  DESIGN target added p50 <= {target_ms:g} ms: {met}{note}")
    lines.append("")
    rss = report["gateway_peak_rss_kib"]
    lines.append(
        "gateway peak RSS (VmHWM): "
        + (f"{rss / 1024:.1f} MiB ({rss} KiB)" if rss is not None else "unavailable")
    )
    errors = report["errors"]
    if errors["total"]:
        lines.append(f"ERRORS: {errors['total']}")
        lines += [f"  {count:>6} x {kind}" for kind, count in errors["by_kind"].items()]
    else:
        lines.append("errors: none (every response was 200 and complete)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_proxy",
        description="Compare a fast upstream called directly and through the ktproxy gateway.",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="measured requests per target per round (default 2000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=10,
        help="concurrent workers and connections (default 10)",
    )
    parser.add_argument(
        "--chunks", type=int, default=20, help="content deltas per streamed reply (default 20)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured rounds per target, alternating (default 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="unmeasured requests per target before the rounds (default 200)",
    )
    parser.add_argument("--mode", choices=("both", "nonstream", "stream"), default="both")
    parser.add_argument(
        "--chain",
        default="",
        help="gateway policy chain, comma-separated (default: empty; the default chain is "
        "'prompt-injection, pii-detector')",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="overall limit in seconds for the whole run (default 900)",
    )
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "chunks", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    modes = ("nonstream", "stream") if args.mode == "both" else (args.mode,)
    return Options(
        requests=args.requests,
        concurrency=args.concurrency,
        chunks=args.chunks,
        rounds=args.rounds,
        warmup=args.warmup,
        modes=modes,
        as_json=args.json,
        timeout=args.timeout,
        chain=args.chain,
    )


async def _main(opts: Options, children: list[Child]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the run like Ctrl-C does, so the children are still stopped.
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with asyncio.timeout(opts.timeout):
            return await benchmark(opts, children)
    except TimeoutError:
        raise BenchError(f"the run exceeded --timeout {opts.timeout:g} s") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the process exit code."""
    opts = parse_args(argv)
    children: list[Child] = []
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner: Callable[..., Any] = asyncio.run
    else:
        runner = uvloop.run
    try:
        report: dict[str, Any] = runner(_main(opts, children))
    except BenchError as exc:
        print(f"bench_proxy: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_proxy: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all(children)  # idempotent; covers a loop torn down before its own cleanup
    if opts.as_json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 1 if report["errors"]["total"] else 0


if __name__ == "__main__":
    sys.exit(main())
