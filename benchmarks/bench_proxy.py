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
        [--rounds 3] [--mode both|nonstream|stream] [--chain ...] [--json]
        [--workers 1,2] [--sweep 1,10,50] [--memory-streams 1000]

`--workers` repeats the measurement with `kt gateway run --workers N` for each N
(same upstream), `--sweep` repeats it for each concurrency; with more than one
combination the report is one table row per mode, worker count and concurrency.
`--memory-streams N` then holds N streams open through the gateway (a slowly
streaming fake upstream, `benchmarks.slow_upstream`) and samples every worker's
resident memory (VmRSS) while they are all open.

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
DESIGN_RSS_PER_WORKER_MB = 150.0  # holding 1,000 concurrent streams; MB = 10**6 bytes
MEMORY_OPEN_TIMEOUT = 60.0  # seconds for every memory stream to receive its first event
MEMORY_HOLD = 5.0  # seconds the streams stay open while memory is sampled
MEMORY_SAMPLE_INTERVAL = 0.1
SLOW_INTERVAL = 0.5  # seconds between the slow upstream's deltas
# A slow stream outlives opening and sampling, then ends by itself.
SLOW_CHUNKS = int((MEMORY_OPEN_TIMEOUT + MEMORY_HOLD + 15) / SLOW_INTERVAL)
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

# Enough upstream connections for every held stream; a short drain so that stopping
# a gateway whose streams were just cut does not wait for them.
MEMORY_CONFIG_TEMPLATE = """\
gateway: {{host: 127.0.0.1, port: {gport}, drain_timeout: 1.0}}
providers:
  targets:
    - id: slow
      provider: openai
      model: gpt-4o
      base_url: http://127.0.0.1:{uport}
      secret_key_ref: {{env: BENCH_UPSTREAM_KEY}}
      max_connections: {max_connections}
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
    workers: tuple[int, ...] = (1,)
    sweep: tuple[int, ...] = ()  # concurrencies; empty: just `concurrency`
    memory_streams: int = 0


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


def proc_status_kib(pid: int, key: str) -> int | None:
    """A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`) in KiB, None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for text in status:
                if text.startswith(key + ":"):
                    return int(text.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """A process's user plus system CPU time so far, None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_children(pid: int) -> list[int]:
    """The direct children of a process (from every thread's `children` list)."""
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as children:
                found.update(int(text) for text in children.read().split())
        except (OSError, ValueError):
            continue
    return sorted(found)


def proc_sockets(pid: int) -> int | None:
    """How many sockets a process holds open, None if its fds cannot be listed."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    count = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def listening_sockets(port: int) -> int:
    """Loopback/any TCP sockets in LISTEN state on `port` (one per SO_REUSEPORT worker)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    local, state = fields[1], fields[3]
                    if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                        count += 1
        except (OSError, ValueError, IndexError):
            continue
    return count


class Gateway(Child):
    """A `kt gateway run` child, with `--workers N`; knows its worker processes."""

    def __init__(
        self, name: str, config: Path, port: int, workers: int, env: dict[str, str], logdir: Path
    ) -> None:
        argv = [sys.executable, "-m", "ktproxy", "gateway", "run"]
        argv += ["--policy-config", str(config), "--port", str(port)]
        if workers != 1:
            argv += ["--workers", str(workers)]
        super().__init__(name, argv, env, logdir)
        self.port = port
        self.workers = workers

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: itself, or its forked children."""
        return [self.pid] if self.workers == 1 else proc_children(self.pid)

    def tree_cpu_seconds(self) -> float | None:
        """CPU seconds of the gateway and all its workers."""
        total = 0.0
        for pid in {self.pid, *self.worker_pids()}:
            cpu = proc_cpu_seconds(pid)
            if cpu is None:
                return None
            total += cpu
        return total

    async def start(self, timeout: float) -> None:
        """Wait for the ready line, then until every worker listens on the port."""
        line = f"Gateway listening on http://localhost:{self.port}"
        if self.workers != 1:
            # The supervisor prints its line once the workers are forked, before they
            # listen: count their LISTEN sockets (SO_REUSEPORT gives each its own).
            line += f" ({self.workers} workers)"
        await self.wait_ready(line, timeout)
        deadline = time.monotonic() + timeout
        while listening_sockets(self.port) < self.workers:
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name}: fewer than {self.workers} workers listen on {self.port} "
                    f"after {timeout:.0f} s.\n" + self.describe_failure()
                )
            await asyncio.sleep(0.05)

    def worker_memory(self) -> list[dict[str, Any]]:
        """Per worker: pid, current RSS and peak RSS (VmHWM) in KiB."""
        return [
            {
                "pid": pid,
                "rss_kib": proc_status_kib(pid, "VmRSS"),
                "hwm_kib": proc_status_kib(pid, "VmHWM"),
            }
            for pid in self.worker_pids()
        ]


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


def note_round(
    run: RunResult,
    children: Sequence[Child],
    errors: Counter[str],
    stats: TargetStats,
    *,
    error_key: str,
    heading: str,
) -> None:
    """After one measured round: every child still alive, the round's errors counted
    under `error_key`, its figures kept in `stats` and printed after `heading`."""
    for child in children:
        child.check_alive()
    for kind, count in run.errors.items():
        errors[f"{error_key}: {kind}"] += count
    stats.add(run)
    lat = sorted(run.latencies)
    progress(
        f"{heading}: {stats.round_rps[-1]:9.1f} req/s  "
        f"p50 {percentile(lat, 50) * 1000:8.3f} ms  "
        f"p99 {percentile(lat, 99) * 1000:8.3f} ms  "
        f"errors {sum(run.errors.values())}"
    )


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


def child_env() -> dict[str, str]:
    """The children's environment: the project importable, the upstream key set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["BENCH_UPSTREAM_KEY"] = UPSTREAM_KEY
    return env


async def start_fast_upstream(
    chunks: int, env: dict[str, str], tmp: Path, children: list[Child]
) -> tuple[Child, int]:
    """Start `benchmarks.fast_upstream` on a free port; the child and its port."""
    (uport,) = free_ports(1)
    argv = [sys.executable, "-m", "benchmarks.fast_upstream", "--port", str(uport)]
    upstream = Child("upstream", [*argv, "--chunks", str(chunks)], env, tmp)
    children.append(upstream)
    await upstream.wait_ready(f"upstream listening on {uport}", READY_TIMEOUT)
    return upstream, uport


async def start_gateway(
    name: str,
    config_text: str,
    gport: int,
    workers: int,
    env: dict[str, str],
    tmp: Path,
    children: list[Child],
) -> Gateway:
    """Write the config and start a gateway on it; return once every worker listens."""
    config = tmp / f"{name}.yaml"
    config.write_text(config_text, "utf-8")
    gateway = Gateway(name, config, gport, workers, env, tmp)
    children.append(gateway)
    await gateway.start(READY_TIMEOUT)
    return gateway


async def measure(
    opts: Options,
    urls: dict[str, str],
    concurrency: int,
    gateway: Gateway,
    children: list[Child],
    errors: Counter[str],
    label: str,
) -> dict[str, Any]:
    """Every mode at one concurrency: warm-up, then alternating measured rounds."""
    modes: dict[str, Any] = {}
    for mode in opts.modes:
        stream = mode == "stream"
        body = request_body(stream)
        if opts.warmup:
            for target in TARGETS:
                warm = await run_load(urls[target], body, stream, opts.warmup, concurrency, 0)
                for kind, count in warm.errors.items():
                    errors[f"{label}{mode} {target} (warm-up): {kind}"] += count
                progress(
                    f"{label}[{mode}] warm-up {target}: {opts.warmup} requests, "
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
                    concurrency,
                    prime=concurrency,
                    cpu_probe=gateway.tree_cpu_seconds if target == "gateway" else None,
                )
                note_round(
                    run,
                    children,
                    errors,
                    stats[target],
                    error_key=f"{label}{mode} {target}",
                    heading=f"{label}[{mode}] round {n}/{opts.rounds} {target:>7}",
                )
        direct = stats["direct"].summary(stream)
        through = stats["gateway"].summary(stream)
        modes[mode] = {"direct": direct, "gateway": through, **compare(direct, through, stream)}
    return modes


async def _benchmark(opts: Options, children: list[Child], tmp: Path) -> dict[str, Any]:
    env = child_env()
    upstream, uport = await start_fast_upstream(opts.chunks, env, tmp, children)
    errors: Counter[str] = Counter()
    concurrencies = opts.sweep or (opts.concurrency,)
    several = len(opts.workers) * len(concurrencies) > 1
    runs: list[dict[str, Any]] = []
    first_peak_rss: int | None = None
    for workers in opts.workers:
        (gport,) = free_ports(1)
        config = CONFIG_TEMPLATE.format(gport=gport, uport=uport, chain=opts.chain)
        gateway = await start_gateway(
            f"gateway-w{workers}", config, gport, workers, env, tmp, children
        )
        progress(
            f"upstream pid {upstream.pid} on :{uport}, gateway pid {gateway.pid} on :{gport}"
            + (f", workers {gateway.worker_pids()}" if workers != 1 else "")
        )
        urls = {
            "direct": f"http://127.0.0.1:{uport}/v1/chat/completions",
            "gateway": f"http://127.0.0.1:{gport}/v1/chat/completions",
        }
        for concurrency in concurrencies:
            label = f"[workers {workers}, concurrency {concurrency}] " if several else ""
            modes = await measure(opts, urls, concurrency, gateway, children, errors, label)
            runs.append({"workers": workers, "concurrency": concurrency, "modes": modes})
        memory = gateway.worker_memory()
        runs[-1]["worker_peak_rss_kib"] = [w["hwm_kib"] for w in memory]
        if first_peak_rss is None and memory:
            first_peak_rss = memory[0]["hwm_kib"]
        gateway.stop()
        children.remove(gateway)

    report: dict[str, Any] = {
        "settings": {
            "requests": opts.requests,
            "concurrency": opts.concurrency,
            "chunks": opts.chunks,
            "rounds": opts.rounds,
            "warmup": opts.warmup,
            "chain": opts.chain,
            "modes": list(opts.modes),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "modes": runs[0]["modes"],
        "gateway_peak_rss_kib": first_peak_rss,
        "design_target_added_p50_ms": DESIGN_ADDED_P50_MS,
    }
    if several:
        report["settings"]["workers"] = list(opts.workers)
        report["settings"]["sweep"] = list(concurrencies)
        report["runs"] = runs
    upstream.stop()
    children.remove(upstream)
    if opts.memory_streams:
        report["memory"] = await memory_benchmark(opts, env, tmp, children, errors)
    report["errors"] = {"total": sum(errors.values()), "by_kind": dict(errors.most_common())}
    return report


# ---------------------------------------------------------------------------
# Memory holding many open streams


async def _hold_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    opened: list[int],
    all_open: asyncio.Event,
    target: int,
    errors: Counter[str],
) -> None:
    """Open one stream, count it once its first event arrived, then read it to the end."""
    try:
        async with session.post(url, data=body) as resp:
            if resp.status != 200:
                text = await resp.content.read(300)
                errors[f"memory: HTTP {resp.status}: {text[:200]!r}"] += 1
                return
            first = await resp.content.readany()
            if not first:
                errors["memory: stream: empty body"] += 1
                return
            opened[0] += 1
            if opened[0] >= target:
                all_open.set()
            while await resp.content.readany():
                pass
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        errors[f"memory: {type(exc).__name__}: {exc}"[:200]] += 1


async def hold_streams(
    url: str, streams: int, sample: Callable[[], None], errors: Counter[str]
) -> tuple[int, float]:
    """Open `streams` streams at once, call `sample` while all are open, then cut them.

    Returns how many were open and how long opening them took (seconds).
    """
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT)
    opened = [0]
    all_open = asyncio.Event()
    body = request_body(stream=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json"}
    ) as session:
        start = time.perf_counter()
        tasks = [
            asyncio.create_task(_hold_stream(session, url, body, opened, all_open, streams, errors))
            for _ in range(streams)
        ]
        try:
            try:
                async with asyncio.timeout(MEMORY_OPEN_TIMEOUT):
                    await all_open.wait()
            except TimeoutError:
                errors[
                    f"memory: only {opened[0]} of {streams} streams open after "
                    f"{MEMORY_OPEN_TIMEOUT:g} s"
                ] += 1
            open_time = time.perf_counter() - start
            held = opened[0]
            deadline = time.monotonic() + MEMORY_HOLD
            while time.monotonic() < deadline:
                sample()
                await asyncio.sleep(MEMORY_SAMPLE_INTERVAL)
            sample()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return held, open_time


class MemorySampler:
    """Peak VmRSS of each worker over repeated samples, against its idle RSS."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.idle = {pid: proc_status_kib(pid, "VmRSS") for pid in pids}
        self.peak: dict[int, int] = {}
        self.sockets: dict[int, int | None] = {}

    def sample(self) -> None:
        """Read every worker's RSS now; count its sockets on the first call."""
        for pid in self.pids:
            rss = proc_status_kib(pid, "VmRSS")
            if rss is not None and rss > self.peak.get(pid, 0):
                self.peak[pid] = rss
        if not self.sockets:
            # Once, with the streams open: one client and one upstream socket per
            # stream, so this shows how the kernel spread the streams over workers.
            self.sockets = {pid: proc_sockets(pid) for pid in self.pids}

    def report(self) -> list[dict[str, Any]]:
        """Per worker: pid, idle and peak RSS in KiB, sockets held."""
        return [
            {
                "pid": pid,
                "idle_rss_kib": self.idle[pid],
                "peak_rss_kib": self.peak.get(pid),
                "sockets": self.sockets.get(pid),
            }
            for pid in self.pids
        ]


async def memory_benchmark(
    opts: Options, env: dict[str, str], tmp: Path, children: list[Child], errors: Counter[str]
) -> dict[str, Any]:
    """Per worker count: peak RSS of each worker while `memory_streams` streams are open."""
    (uport,) = free_ports(1)
    argv = [sys.executable, "-m", "benchmarks.slow_upstream", "--port", str(uport)]
    argv += ["--interval", str(SLOW_INTERVAL), "--chunks", str(SLOW_CHUNKS)]
    upstream = Child("slow-upstream", argv, env, tmp)
    children.append(upstream)
    await upstream.wait_ready(f"slow upstream listening on {uport}", READY_TIMEOUT)
    results: list[dict[str, Any]] = []
    for workers in opts.workers:
        (gport,) = free_ports(1)
        config = MEMORY_CONFIG_TEMPLATE.format(
            gport=gport, uport=uport, chain=opts.chain, max_connections=opts.memory_streams + 64
        )
        gateway = await start_gateway(
            f"gateway-mem-w{workers}", config, gport, workers, env, tmp, children
        )
        sampler = MemorySampler(gateway.worker_pids())
        url = f"http://127.0.0.1:{gport}/v1/chat/completions"
        progress(f"[memory] workers {workers}: opening {opts.memory_streams} streams")
        held, open_time = await hold_streams(url, opts.memory_streams, sampler.sample, errors)
        gateway.check_alive()
        per_worker = sampler.report()
        peaks = [w["peak_rss_kib"] for w in per_worker if w["peak_rss_kib"] is not None]
        max_mb = max(peaks) * 1024 / 1e6 if peaks else None
        results.append(
            {
                "workers": workers,
                "streams_open": held,
                "open_seconds": round(open_time, 2),
                "per_worker": per_worker,
                "max_peak_rss_mb": round(max_mb, 1) if max_mb is not None else None,
                "target_met": None if max_mb is None else max_mb <= DESIGN_RSS_PER_WORKER_MB,
            }
        )
        progress(
            f"[memory] workers {workers}: {held} streams open in {open_time:.1f} s, "
            f"peak RSS per worker "
            + ", ".join(f"{(w['peak_rss_kib'] or 0) * 1024 / 1e6:.1f} MB" for w in per_worker)
        )
        gateway.stop()
        children.remove(gateway)
    upstream.stop()
    children.remove(upstream)
    return {
        "streams": opts.memory_streams,
        "hold_seconds": MEMORY_HOLD,
        "design_target_mb_per_worker": DESIGN_RSS_PER_WORKER_MB,
        "runs": results,
    }


def _fmt(value: float | None, spec: str, width: int = 10) -> str:
    return format(value, spec).rjust(width) if value is not None else "n/a".rjust(width)


def format_sweep(report: dict[str, Any]) -> list[str]:
    """One row per mode, worker count and concurrency."""
    lines = [
        "",
        f"{'mode':<10}{'workers':>8}{'conc':>6}{'direct/s':>10}{'gateway/s':>11}{'gw/dir':>8}"
        f"{'dir p50':>9}{'gw p50':>9}{'added':>9}{'gw p99':>9}{'CPU us':>8}",
    ]
    for mode in report["settings"].get("modes", ["nonstream", "stream"]):
        for run in report["runs"]:
            res = run["modes"].get(mode)
            if res is None:
                continue
            d, g = res["direct"], res["gateway"]
            lines.append(
                f"{mode:<10}{run['workers']:>8}{run['concurrency']:>6}"
                + _fmt(d["rps"], ".0f")
                + _fmt(g["rps"], ".0f", 11)
                + _fmt(res["throughput_ratio"], ".3f", 8)
                + _fmt(d["p50_ms"], ".3f", 9)
                + _fmt(g["p50_ms"], ".3f", 9)
                + _fmt(res["added_p50_ms"], "+.3f", 9)
                + _fmt(g["p99_ms"], ".3f", 9)
                + _fmt(g.get("cpu_us_per_request"), ".0f", 8)
            )
    lines.append(
        "  (req/s; latencies in ms; added = gateway p50 - direct p50; CPU us = gateway "
        "CPU, supervisor and workers, per request)"
    )
    for run in report["runs"]:
        rss = run.get("worker_peak_rss_kib") or []
        if run["concurrency"] == report["runs"][-1]["concurrency"] and rss:
            lines.append(
                f"  workers {run['workers']}: peak RSS (VmHWM) per worker "
                + ", ".join(f"{k / 1024:.1f} MiB" if k else "n/a" for k in rss)
            )
    return lines


def format_memory(memory: dict[str, Any]) -> list[str]:
    """Peak RSS per worker while the streams were open, against the DESIGN target."""
    target = memory["design_target_mb_per_worker"]
    lines = [
        "",
        f"memory: {memory['streams']} concurrent streams held open "
        f"{memory['hold_seconds']:g} s (VmRSS sampled every {MEMORY_SAMPLE_INTERVAL:g} s)",
        f"{'workers':>9}{'open':>7}{'worker pid':>12}{'sockets':>9}{'idle MB':>10}"
        f"{'peak MB':>10}{'target':>10}",
    ]
    for run in memory["runs"]:
        for n, w in enumerate(run["per_worker"]):
            idle = w["idle_rss_kib"] * 1024 / 1e6 if w["idle_rss_kib"] is not None else None
            peak = w["peak_rss_kib"] * 1024 / 1e6 if w["peak_rss_kib"] is not None else None
            met = "n/a" if peak is None else "met" if peak <= target else "NOT met"
            lines.append(
                (f"{run['workers']:>9}{run['streams_open']:>7}" if n == 0 else " " * 16)
                + f"{w['pid']:>12}"
                + _fmt(w["sockets"], "d", 9)
                + _fmt(idle, ".1f")
                + _fmt(peak, ".1f")
                + met.rjust(10)
            )
    lines.append(
        f"  DESIGN target: <= {target:g} MB RSS per worker holding 1,000 streams "
        "(MB = 10^6 bytes; peak = highest VmRSS sample)"
    )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as a human-readable table."""
    s = report["settings"]
    target_ms = report["design_target_added_p50_ms"]
    lines = [
        f"ktproxy proxy benchmark: {s['requests']} requests x {s['rounds']} round(s) per "
        f"target, concurrency {s['concurrency']}, {s['chunks']} chunks per stream, "
        f"warm-up {s['warmup']}, {s['cpus']} CPU(s)",
    ]
    if s.get("chain"):
        lines.append(f"gateway policy chain: {s['chain']}")
    if "runs" in report:
        lines[0] = lines[0].replace(
            f"concurrency {s['concurrency']}",
            f"workers {','.join(map(str, s['workers']))}, "
            f"concurrency {','.join(map(str, s['sweep']))}",
        )
        lines += format_sweep(report)
    for mode, res in ({} if "runs" in report else report["modes"]).items():
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
    if "runs" not in report:
        lines.append("")
        rss = report["gateway_peak_rss_kib"]
        lines.append(
            "gateway peak RSS (VmHWM): "
            + (f"{rss / 1024:.1f} MiB ({rss} KiB)" if rss is not None else "unavailable")
        )
    if "memory" in report:
        lines += [*format_memory(report["memory"]), ""]
    lines += format_errors(report["errors"])
    return "\n".join(lines)


def format_errors(errors: dict[str, Any]) -> list[str]:
    """The error summary lines of a report (`errors`: total and counts by kind)."""
    if not errors["total"]:
        return ["errors: none (every response was 200 and complete)"]
    return [
        f"ERRORS: {errors['total']}",
        *(f"  {count:>6} x {kind}" for kind, count in errors["by_kind"].items()),
    ]


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
    parser.add_argument(
        "--workers",
        default="1",
        help="gateway worker counts, comma-separated: the measurement is repeated with "
        "`kt gateway run --workers N` for each (default 1)",
    )
    parser.add_argument(
        "--sweep",
        default="",
        help="concurrencies, comma-separated: one table row per concurrency "
        "(default: just --concurrency)",
    )
    parser.add_argument(
        "--memory-streams",
        type=int,
        default=0,
        metavar="N",
        help="afterwards hold N concurrent streams open through the gateway (a slowly "
        "streaming upstream) and report each worker's peak RSS (default 0: off)",
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
    workers = _int_list(parser, "--workers", args.workers, 1, 256)
    sweep = _int_list(parser, "--sweep", args.sweep, 1, 10000) if args.sweep else ()
    if not 0 <= args.memory_streams <= 10000:
        parser.error("--memory-streams must be between 0 and 10000")
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
        workers=workers,
        sweep=sweep,
        memory_streams=args.memory_streams,
    )


def _int_list(
    parser: argparse.ArgumentParser, name: str, text: str, low: int, high: int
) -> tuple[int, ...]:
    """A comma-separated list of distinct integers in [low, high], in the given order."""
    values: list[int] = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            parser.error(f"{name}: expected comma-separated integers, got {text!r}")
        if not low <= value <= high:
            parser.error(f"{name}: {value} is not between {low} and {high}")
        if value not in values:
            values.append(value)
    return tuple(values)


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


def run_report(
    prog: str,
    measure: Callable[[list[Child]], Any],
    as_json: bool,
    fmt: Callable[[dict[str, Any]], str],
) -> int:
    """Run `measure(children)` (a coroutine factory) on uvloop, stop every child it
    started whatever happens, print the report as JSON or with `fmt`; the exit code
    (2: run error, 130: interrupted, 1: requests failed)."""
    children: list[Child] = []
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner: Callable[..., Any] = asyncio.run
    else:
        runner = uvloop.run
    try:
        report: dict[str, Any] = runner(measure(children))
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all(children)  # idempotent; covers a loop torn down before its own cleanup
    print(json.dumps(report, indent=2) if as_json else fmt(report))
    return 1 if report["errors"]["total"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the process exit code."""
    opts = parse_args(argv)
    return run_report(
        "bench_proxy", lambda children: _main(opts, children), opts.as_json, format_report
    )


if __name__ == "__main__":
    sys.exit(main())
