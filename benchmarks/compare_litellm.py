"""ktproxy against the LiteLLM proxy: the same upstream, the same load, side by side.

The run creates (or reuses) a separate virtualenv, `build/litellm-venv`, with
`litellm[proxy]` in it — never in the project's environment — then starts as child
processes on free loopback ports:

* `benchmarks.fast_upstream`, the fake OpenAI-compatible upstream of `bench_proxy`;
* `benchmarks.passthrough`, a bare aiohttp (uvloop) relay to it with no policies: the
  ceiling of an aiohttp proxy on this machine, which the DESIGN targets assumed to be
  about 35x (non-streaming) and 85x (streaming) LiteLLM's rate;
* a ktproxy gateway (one worker, the default chain `prompt-injection, pii-detector`)
  routing `gpt-4o` to it;
* `litellm --config ... --num_workers 1` routing `gpt-4o` to the same upstream
  (`openai/gpt-4o`, `api_base` the upstream, a dummy key), kept offline: the local
  model cost map, no telemetry, no database.

It drives the upstream directly (the reference), the pass-through, ktproxy and
LiteLLM with `bench_proxy`'s load generator, non-streaming and streaming, alternating
the targets round by round, and prints requests/s and p50/p90/p99 with the ratio
ktproxy/LiteLLM against the DESIGN targets (>= 60x non-streaming, >= 100x
streaming), the pass-through's ratio to LiteLLM against the assumed 35x/85x, and
ktproxy's rate as a share of the pass-through's. LiteLLM is far slower, so it gets
its own, smaller request budget.

    python -m benchmarks.compare_litellm [--requests 2000] [--litellm-requests 300]
        [--concurrency 10] [--rounds 2] [--mode both|nonstream|stream] [--json]

Exit code: 0 when every response was correct, 1 when any was not, 2 when a process
could not be started, the virtualenv could not be made, or the run hit `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bench_proxy import (
    CONFIG_TEMPLATE,
    MODES,
    PROJECT_ROOT,
    READY_TIMEOUT,
    UPSTREAM_KEY,
    BenchError,
    Child,
    TargetStats,
    _fmt,
    child_env,
    format_errors,
    free_ports,
    note_round,
    proc_children,
    progress,
    request_body,
    run_load,
    run_report,
    start_fast_upstream,
    start_gateway,
    stop_all,
)

VENV = PROJECT_ROOT / "build" / "litellm-venv"
DEFAULT_SPEC = "litellm[proxy]"
INSTALL_TIMEOUT = 1200.0  # seconds for venv creation plus pip install
LITELLM_READY_TIMEOUT = 180.0  # LiteLLM imports a lot before it listens
DEFAULT_CHAIN = "prompt-injection, pii-detector"
DESIGN_RATIO = {"nonstream": 60.0, "stream": 100.0}
# What the DESIGN targets took a bare aiohttp pass-through to reach, times LiteLLM.
ASSUMED_PASSTHROUGH_RATIO = {"nonstream": 35.0, "stream": 85.0}
TARGETS = ("direct", "passthrough", "ktproxy", "litellm")
LABELS = {
    "direct": "upstream direct",
    "passthrough": "pass-through",
    "ktproxy": "ktproxy",
    "litellm": "LiteLLM proxy",
}

LITELLM_CONFIG_TEMPLATE = """\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:{uport}/v1
      api_key: {key}
litellm_settings:
  request_timeout: 30
  num_retries: 0
  set_verbose: false
"""

# Offline and quiet: no cost-map download, no telemetry or feedback prompts, no
# database, errors only in the log. No master key, like the ktproxy config with no
# consumer keys: neither side authenticates, and it listens on 127.0.0.1 only.
LITELLM_ENV = {
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
}


@dataclass(frozen=True)
class Options:
    """The command line, checked."""

    requests: int
    litellm_requests: int
    concurrency: int
    rounds: int
    warmup: int
    modes: tuple[str, ...]
    chunks: int
    as_json: bool
    timeout: float
    spec: str


# ---------------------------------------------------------------------------
# The LiteLLM virtualenv and process


def venv_bin(name: str) -> Path:
    """A program in the LiteLLM virtualenv."""
    return VENV / "bin" / name


def _run_step(argv: list[str], deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BenchError(f"installing LiteLLM took longer than {INSTALL_TIMEOUT:g} s")
    progress("$ " + " ".join(argv))
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=left
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out: {' '.join(argv)}") from None
    if done.returncode:
        raise BenchError(
            f"failed (exit code {done.returncode}): {' '.join(argv)}\n"
            + (done.stderr or done.stdout)[-4000:]
        )


def ensure_venv(spec: str) -> str:
    """Create `build/litellm-venv` with `spec` installed unless it exists; its version.

    Runs before the event loop starts: the children it spawns (venv, pip) are waited
    for synchronously, with a deadline, and none is left running when it raises.
    """
    deadline = time.monotonic() + INSTALL_TIMEOUT
    if not venv_bin("litellm").exists():
        if not venv_bin("python").exists():
            _run_step([sys.executable, "-m", "venv", str(VENV)], deadline)
        pip = [str(venv_bin("python")), "-m", "pip", "install", "--disable-pip-version-check"]
        _run_step([*pip, "--quiet", spec], deadline)
    version = subprocess.run(
        [
            str(venv_bin("python")),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if version.returncode:
        raise BenchError(f"{VENV}: litellm is not importable:\n{version.stderr[-2000:]}")
    return version.stdout.strip()


def litellm_config(uport: int) -> str:
    """LiteLLM's config: `gpt-4o` routed to the fake upstream on `uport`, no retries."""
    return LITELLM_CONFIG_TEMPLATE.format(uport=uport, key=UPSTREAM_KEY)


def litellm_env(environ: Mapping[str, str]) -> dict[str, str]:
    """LiteLLM's environment: ours without a database or our import path, kept offline."""
    env = {k: v for k, v in environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    env.update(LITELLM_ENV)
    return env


class LiteLLM(Child):
    """`litellm --config ... --port P --num_workers 1`; readiness by its liveness route."""

    def __init__(self, config: Path, port: int, env: dict[str, str], logdir: Path) -> None:
        argv = [str(venv_bin("litellm")), "--config", str(config), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--num_workers", "1"]
        super().__init__("litellm", argv, env, logdir)
        self.port = port
        self.descendants: set[int] = set()

    async def wait_live(self, timeout: float) -> None:
        """Poll `GET /health/liveliness` until 200; raise if it exits or takes too long."""
        url = f"http://127.0.0.1:{self.port}/health/liveliness"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                self.check_alive()
                self._remember_descendants()
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"LiteLLM did not answer {url} within {timeout:.0f} s.\n"
                        + self.describe_failure()
                    )
                await asyncio.sleep(0.25)

    def _remember_descendants(self) -> None:
        todo = [self.pid]
        while todo:
            for pid in proc_children(todo.pop()):
                if pid not in self.descendants:
                    self.descendants.add(pid)
                    todo.append(pid)

    def stop(self) -> None:
        """Stop it by pid, then any process it started that outlived it, by pid."""
        if self.proc.poll() is None:
            self._remember_descendants()
        super().stop()
        for pid in sorted(self.descendants):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


async def start_passthrough(
    uport: int, env: dict[str, str], tmp: Path, children: list[Child]
) -> tuple[Child, int]:
    """Start `benchmarks.passthrough` in front of the upstream; the child and its port."""
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "benchmarks.passthrough", "--port", str(port)]
    argv += ["--upstream", f"http://127.0.0.1:{uport}"]
    child = Child("passthrough", argv, env, tmp)
    children.append(child)
    await child.wait_ready(f"passthrough listening on {port}", READY_TIMEOUT)
    return child, port


def _ratio(a: float | None, b: float | None, digits: int = 1) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def ratios(summary: dict[str, dict[str, Any]], mode: str) -> dict[str, Any]:
    """The same-run ratios of one mode, from each target's `TargetStats.summary`.

    `ratio_rps` is ktproxy/LiteLLM requests/s (the DESIGN figure), `passthrough_ratio_rps`
    the pass-through's, and `ktproxy_passthrough_ratio` ktproxy's rate as a share of the
    pass-through's; `design_passthrough_ratio` is that share as the targets implied it
    (target / assumed pass-through ratio). A ratio with a zero or missing side is None.
    """
    kt, ll, pt = summary["ktproxy"], summary["litellm"], summary["passthrough"]
    return {
        "ratio_rps": _ratio(kt["rps"], ll["rps"]),
        "ratio_p50": _ratio(ll["p50_ms"], kt["p50_ms"]),
        "design_ratio": DESIGN_RATIO[mode],
        "passthrough_ratio_rps": _ratio(pt["rps"], ll["rps"]),
        "assumed_passthrough_ratio": ASSUMED_PASSTHROUGH_RATIO[mode],
        "ktproxy_passthrough_ratio": _ratio(kt["rps"], pt["rps"], 3),
        "design_passthrough_ratio": round(DESIGN_RATIO[mode] / ASSUMED_PASSTHROUGH_RATIO[mode], 3),
    }


# ---------------------------------------------------------------------------
# The comparison


async def compare(opts: Options, children: list[Child], version: str) -> dict[str, Any]:
    """Start the three servers, run every mode, and return the report as plain data."""
    with tempfile.TemporaryDirectory(prefix="ktproxy-vs-litellm-") as tmp:
        try:
            return await _compare(opts, children, Path(tmp), version)
        finally:
            stop_all(children)


async def _compare(opts: Options, children: list[Child], tmp: Path, version: str) -> dict[str, Any]:
    env = child_env()
    upstream, uport = await start_fast_upstream(opts.chunks, env, tmp, children)
    passthrough, pport = await start_passthrough(uport, env, tmp, children)
    gport, lport = free_ports(2)
    config = CONFIG_TEMPLATE.format(gport=gport, uport=uport, chain=DEFAULT_CHAIN)
    gateway = await start_gateway("ktproxy", config, gport, 1, env, tmp, children)

    lconfig = tmp / "litellm.yaml"
    lconfig.write_text(litellm_config(uport), "utf-8")
    litellm = LiteLLM(lconfig, lport, litellm_env(os.environ), tmp)
    children.append(litellm)
    started = time.monotonic()
    await litellm.wait_live(LITELLM_READY_TIMEOUT)
    progress(
        f"upstream pid {upstream.pid} :{uport}, pass-through pid {passthrough.pid} "
        f":{pport}, ktproxy pid {gateway.pid} :{gport}, "
        f"LiteLLM {version} pid {litellm.pid} :{lport} (ready in "
        f"{time.monotonic() - started:.1f} s)"
    )

    urls = {
        "direct": f"http://127.0.0.1:{uport}/v1/chat/completions",
        "passthrough": f"http://127.0.0.1:{pport}/v1/chat/completions",
        "ktproxy": f"http://127.0.0.1:{gport}/v1/chat/completions",
        "litellm": f"http://127.0.0.1:{lport}/v1/chat/completions",
    }
    budgets = {target: opts.requests for target in TARGETS}
    budgets["litellm"] = opts.litellm_requests
    probes: dict[str, Callable[[], float | None]] = {
        "passthrough": passthrough.cpu_seconds,
        "ktproxy": gateway.cpu_seconds,
        "litellm": litellm.cpu_seconds,
    }
    errors: Counter[str] = Counter()
    modes: dict[str, Any] = {}
    for mode in opts.modes:
        stream = mode == "stream"
        body = request_body(stream)
        for target in TARGETS:
            warm = min(opts.warmup, budgets[target])
            if warm:
                run = await run_load(urls[target], body, stream, warm, opts.concurrency, 0)
                for kind, count in run.errors.items():
                    errors[f"{mode} {target} (warm-up): {kind}"] += count
        stats = {target: TargetStats() for target in TARGETS}
        for n in range(1, opts.rounds + 1):
            for target in TARGETS:
                run = await run_load(
                    urls[target],
                    body,
                    stream,
                    budgets[target],
                    opts.concurrency,
                    prime=opts.concurrency,
                    cpu_probe=probes.get(target),
                )
                note_round(
                    run,
                    children,
                    errors,
                    stats[target],
                    error_key=f"{mode} {target}",
                    heading=f"[{mode}] round {n}/{opts.rounds} {target:>11}",
                )
        summary = {target: stats[target].summary(stream) for target in TARGETS}
        modes[mode] = {**summary, **ratios(summary, mode)}
    return {
        "settings": {
            "requests": opts.requests,
            "litellm_requests": opts.litellm_requests,
            "concurrency": opts.concurrency,
            "rounds": opts.rounds,
            "warmup": opts.warmup,
            "chunks": opts.chunks,
            "ktproxy_chain": DEFAULT_CHAIN,
            "litellm_version": version,
            "cpus": os.cpu_count(),
        },
        "modes": modes,
        "peak_rss_kib": {
            "passthrough": passthrough.peak_rss_kib(),
            "ktproxy": gateway.peak_rss_kib(),
            "litellm": litellm.peak_rss_kib(),
        },
        "errors": {"total": sum(errors.values()), "by_kind": dict(errors.most_common())},
    }


def _times(ratio: float | None, spec: str) -> str:
    return "n/a" if ratio is None else f"{ratio:{spec}}x"


def format_report(report: dict[str, Any]) -> str:
    """The report as a human-readable table."""
    s = report["settings"]
    lines = [
        f"ktproxy vs LiteLLM proxy {s['litellm_version']}: one worker each, concurrency "
        f"{s['concurrency']}, {s['rounds']} round(s) of {s['requests']} requests "
        f"({s['litellm_requests']} for LiteLLM), {s['chunks']} chunks per stream, "
        f"{s['cpus']} CPU(s)",
        f"ktproxy chain: {s['ktproxy_chain']}; LiteLLM: default proxy settings, "
        "no database, no master key",
        "pass-through: a bare aiohttp (uvloop) relay with one pooled client session, "
        "no policies, one process",
    ]
    for mode, res in report["modes"].items():
        lines.append("")
        lines.append(
            f"{MODES[mode]:<18}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'CPU us':>9}"
        )
        for target in TARGETS:
            r = res[target]
            lines.append(
                f"  {LABELS[target]:<16}{_fmt(r['rps'], '.1f')}"
                + "".join(_fmt(r[key], ".3f") for key in ("p50_ms", "p90_ms", "p99_ms"))
                + _fmt(r.get("cpu_us_per_request"), ".0f", 9)
            )
        ratio, want = res["ratio_rps"], res["design_ratio"]
        met = "n/a" if ratio is None else "met" if ratio >= want else "NOT met"
        lines.append(
            f"  ktproxy/LiteLLM requests/s {_times(ratio, '.1f')} "
            f"(DESIGN target >= {want:g}x: {met}); "
            f"LiteLLM p50 / ktproxy p50 {_times(res['ratio_p50'], '.1f')}"
        )
        lines.append(
            f"  pass-through/LiteLLM requests/s {_times(res['passthrough_ratio_rps'], '.1f')} "
            f"(DESIGN assumed ~{res['assumed_passthrough_ratio']:g}x); "
            f"ktproxy/pass-through {_times(res['ktproxy_passthrough_ratio'], '.2f')} "
            f"(the targets imply {res['design_passthrough_ratio']:.2f}x)"
        )
    rss = report["peak_rss_kib"]
    lines.append("")
    lines.append(
        "peak RSS (VmHWM): "
        + ", ".join(
            f"{LABELS[name]} {kib / 1024:.1f} MiB" if kib else f"{LABELS[name]} n/a"
            for name, kib in rss.items()
        )
    )
    lines += format_errors(report["errors"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_litellm",
        description="ktproxy and the LiteLLM proxy, same upstream and load, side by side.",
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per round, direct and ktproxy"
    )
    parser.add_argument(
        "--litellm-requests", type=int, default=300, help="requests per round for LiteLLM"
    )
    parser.add_argument("--concurrency", type=int, default=10, help="workers (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (default 2)")
    parser.add_argument(
        "--warmup", type=int, default=50, help="unmeasured requests per target (default 50)"
    )
    parser.add_argument("--chunks", type=int, default=20, help="deltas per stream (default 20)")
    parser.add_argument("--mode", choices=("both", "nonstream", "stream"), default="both")
    parser.add_argument(
        "--litellm-spec", default=DEFAULT_SPEC, help=f"pip requirement (default {DEFAULT_SPEC!r})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="limit in seconds for the measured run, installation excluded (default 900)",
    )
    args = parser.parse_args(argv)
    for name in ("requests", "litellm_requests", "concurrency", "rounds", "chunks"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return Options(
        requests=args.requests,
        litellm_requests=args.litellm_requests,
        concurrency=args.concurrency,
        rounds=args.rounds,
        warmup=args.warmup,
        modes=("nonstream", "stream") if args.mode == "both" else (args.mode,),
        chunks=args.chunks,
        as_json=args.json,
        timeout=args.timeout,
        spec=args.litellm_spec,
    )


async def _main(opts: Options, children: list[Child], version: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with asyncio.timeout(opts.timeout):
            return await compare(opts, children, version)
    except TimeoutError:
        raise BenchError(f"the run exceeded --timeout {opts.timeout:g} s") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; the process exit code."""
    opts = parse_args(argv)
    try:
        version = ensure_venv(opts.spec)
    except BenchError as exc:
        print(f"compare_litellm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compare_litellm: interrupted", file=sys.stderr)
        return 130
    return run_report(
        "compare_litellm",
        lambda children: _main(opts, children, version),
        opts.as_json,
        format_report,
    )


if __name__ == "__main__":
    sys.exit(main())
