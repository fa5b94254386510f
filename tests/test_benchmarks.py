"""The benchmark tools, run the way users run them, in their smallest configurations.

Each tool runs as `python -m benchmarks.X ... --json` in a subprocess (where it has
`--json`), and the tests read the report it prints: the fields are there, the counts
are the requested counts, nothing failed, and the figures are sane (positive rates,
ordered percentiles). No test asserts how fast anything was: the figures vary with the
machine, the shape of the report does not. The pass-through relay runs as a process
driven with aiohttp; the LiteLLM comparison is checked through its pure parts (config,
environment, ratios, table), since LiteLLM itself is not installed here.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from benchmarks import bench_proxy, compare_litellm
from benchmarks.bench_proxy import (
    UPSTREAM_KEY,
    Child,
    RunResult,
    TargetStats,
    child_env,
    request_body,
    run_load,
    start_fast_upstream,
    stop_all,
)
from benchmarks.compare_litellm import start_passthrough
from tests.harness import run_python

QUICK = ("--rounds", "1", "--warmup", "0", "--chunks", "3")


def _report(*args: str) -> dict[str, Any]:
    """Run a tool with `--json`; its report, after checking it exited 0."""
    done = run_python("-m", *args, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _check_target(summary: dict[str, Any], requests: int, stream: bool) -> None:
    """One target's summary: every request counted, a rate, ordered percentiles."""
    assert summary["requests"] == requests
    assert summary["rps"] > 0
    assert all(rate > 0 for rate in summary["round_rps"])
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
    if stream:
        assert 0 < summary["ttfb_p50_ms"] <= summary["ttfb_p99_ms"]
        assert summary["ttfb_p50_ms"] <= summary["p99_ms"]
    else:
        assert "ttfb_p50_ms" not in summary


def _check_mode(result: dict[str, Any], requests: int, stream: bool) -> None:
    """One mode of a bench_proxy run: both targets and the figures derived from them."""
    _check_target(result["direct"], requests, stream)
    _check_target(result["gateway"], requests, stream)
    assert result["throughput_ratio"] > 0
    # Only the gateway is watched; /proc counts CPU in clock ticks (10 ms), which a
    # handful of requests may not reach.
    assert result["gateway"]["cpu_us_per_request"] >= 0
    assert "cpu_us_per_request" not in result["direct"]
    for key in ("added_p50_ms", "added_p99_ms"):
        assert isinstance(result[key], float)
    assert ("added_ttfb_p50_ms" in result) == stream


def _no_errors(report: dict[str, Any]) -> None:
    assert report["errors"] == {"total": 0, "by_kind": {}}


def test_bench_injection_smallest_run() -> None:
    report = _report(
        "benchmarks.bench_injection", "--small", "2000", "--large", "8000", "--repeat", "1"
    )
    assert (report["small"], report["large"]) == (2000, 8000)
    rows = {r["shape"]: r for r in report["rows"]}
    assert set(rows) == {
        "prose (reference)", "dense override phrases", "anchor words only",
        "overrides among prose", "allowed phrase repeated",
    }  # fmt: skip
    assert rows["prose (reference)"]["vs_prose"] == 1.0
    for row in rows.values():
        assert row["us_per_kib_small"] > 0 and row["us_per_kib_large"] > 0
        assert row["growth"] == pytest.approx(
            row["us_per_kib_large"] / row["us_per_kib_small"], rel=0.1
        )


# ---------------------------------------------------------------------------
# bench_proxy


def test_bench_proxy_one_worker_both_modes() -> None:
    report = _report(
        "benchmarks.bench_proxy",
        *("--requests", "20", "--rounds", "2", "--warmup", "5"),
        *("--concurrency", "2", "--chunks", "3"),
    )
    settings = report["settings"]
    assert settings["requests"] == 20
    assert settings["rounds"] == 2
    assert settings["modes"] == ["nonstream", "stream"]
    assert set(report["modes"]) == {"nonstream", "stream"}
    for mode, result in report["modes"].items():
        _check_mode(result, 40, mode == "stream")  # two rounds of 20
        assert len(result["gateway"]["round_rps"]) == 2
    assert "runs" not in report  # one combination: the plain report
    assert report["gateway_peak_rss_kib"] > 0
    _no_errors(report)
    # The table a user reads without --json, from the same report.
    table = bench_proxy.format_report(report)
    assert "through gateway" in table
    assert "DESIGN target added p50 <= 1 ms" in table
    assert table.endswith("errors: none (every response was 200 and complete)")


@pytest.mark.parametrize("mode", ["nonstream", "stream"])
def test_bench_proxy_workers_and_sweep(mode: str) -> None:
    report = _report(
        "benchmarks.bench_proxy",
        *("--requests", "10", "--mode", mode, "--workers", "1,2", "--sweep", "1,3"),
        *QUICK,
    )
    assert report["settings"]["workers"] == [1, 2]
    assert report["settings"]["sweep"] == [1, 3]
    runs = report["runs"]
    assert [(run["workers"], run["concurrency"]) for run in runs] == [
        (1, 1),
        (1, 3),
        (2, 1),
        (2, 3),
    ]
    for run in runs:
        assert list(run["modes"]) == [mode]
        _check_mode(run["modes"][mode], 10, mode == "stream")
    # Peak memory is read once per gateway, after its last concurrency: one per worker.
    assert [len(run.get("worker_peak_rss_kib", [])) for run in runs] == [0, 1, 0, 2]
    assert all(kib > 0 for run in runs for kib in run.get("worker_peak_rss_kib", []))
    assert report["modes"] == runs[0]["modes"]
    _no_errors(report)
    table = bench_proxy.format_report(report)
    rows = [line for line in table.splitlines() if line.startswith(mode)]
    assert len(rows) == 4  # one row per worker count and concurrency


def test_bench_proxy_memory_streams_two_workers() -> None:
    report = _report(
        "benchmarks.bench_proxy",
        *("--requests", "5", "--mode", "nonstream", "--workers", "2", "--memory-streams", "50"),
        *QUICK,
    )
    memory = report["memory"]
    assert memory["streams"] == 50
    (run,) = memory["runs"]
    assert run["workers"] == 2
    assert run["streams_open"] == 50
    assert len(run["per_worker"]) == 2
    for worker in run["per_worker"]:
        assert 0 < worker["idle_rss_kib"] <= worker["peak_rss_kib"]
    # One client and one upstream socket per open stream, however they were spread.
    assert sum(worker["sockets"] for worker in run["per_worker"]) >= 2 * 50
    assert run["max_peak_rss_mb"] > 0
    assert isinstance(run["target_met"], bool)
    _no_errors(report)
    assert "concurrent streams held open" in bench_proxy.format_report(report)


def test_bench_proxy_reports_a_gateway_that_refuses_its_config() -> None:
    done = run_python(
        "-m", "benchmarks.bench_proxy", "--requests", "5", "--chain", "no-such-policy", "--json"
    )
    assert done.returncode == 2
    assert done.stdout == ""  # no half report
    assert "bench_proxy: error: gateway-w1 exited before it was ready." in done.stderr
    assert "unknown policy 'no-such-policy'" in done.stderr  # the gateway's own message
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--requests", "0"], "--requests must be at least 1"),
        (["--workers", "1,0"], "--workers: 0 is not between 1 and 256"),
        (["--sweep", "1,x"], "--sweep: expected comma-separated integers"),
        (["--memory-streams", "-1"], "--memory-streams must be between 0 and 10000"),
        (["--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_bench_proxy_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_proxy.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------
# bench_scan and bench_chunk


def test_bench_scan_smallest_run() -> None:
    # No --json: the C/Python agreement check and the table are what a run shows.
    done = run_python("-m", "benchmarks.bench_scan", "--size", "20000", "--repeat", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("text: 20,")  # about --size characters
    for row in ("C _ktscan", "C _ktscan, 4-byte-kind str", "Python reference", "re alternation"):
        assert f"\n{row} " in out
    assert "one call on a 78-character chunk (final=False)" in out


def test_bench_chunk_smallest_run() -> None:
    report = _report("benchmarks.bench_chunk", "--events", "200")
    assert report["events"] == 200
    assert report["scanner"] in ("c", "py")
    timed = {name: value for name, value in report.items() if isinstance(value, dict)}
    assert set(timed) == {
        "decode only (reference)",
        "rewriter, no filter",
        "default chain (pii-detector)",
        "default chain, a timed stream",
    }
    for figures in timed.values():
        assert 0 < figures["median_us"] <= figures["p99_us"]
        assert figures["mean_us"] > 0


def test_events_store_smallest_run() -> None:
    report = _report("benchmarks.events_store", "--records", "300", "--repeat", "1")
    assert report["records"] == 300 and report["reference_records"] == 300
    assert set(report["figures"]) == {
        "first page (limit 50)", "page 21 (20 cursors deep)", "consumer=team-b",
        "decision=blocked", "decision=deny_list.competitor", "streamed=true", "status=504",
        "q=<full id>", "q=<last 8 digits>", "stats 1h", "stats 24h", "stats 7d",
    }  # fmt: skip
    for figures in report["figures"].values():
        assert figures["ms"] > 0 and figures["reference_ms"] > 0
        ratio = figures["ms"] / figures["reference_ms"]
        assert figures["ratio"] == pytest.approx(ratio, rel=0.05, abs=0.02)


# ---------------------------------------------------------------------------
# The pass-through relay


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[str, str, list[Child]]]:
    """The fast upstream and the pass-through in front of it, as processes: their
    completion URLs (direct, relayed) and the children, stopped afterwards."""
    children: list[Child] = []
    env = child_env()
    try:
        _, uport = await start_fast_upstream(3, env, tmp_path, children)
        _, pport = await start_passthrough(uport, env, tmp_path, children)
        url = "http://127.0.0.1:{}/v1/chat/completions"
        yield url.format(uport), url.format(pport), children
    finally:
        stop_all(children)


async def test_passthrough_relays_both_modes_unchanged(
    relay: tuple[str, str, list[Child]],
) -> None:
    direct, relayed = relay[0], relay[1]
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            answers = []
            for url in (direct, relayed):
                async with session.post(
                    url, data=request_body(stream), headers={"Content-Type": "application/json"}
                ) as resp:
                    answers.append((resp.status, resp.content_type, await resp.read()))
            assert answers[1] == answers[0]  # same status, type and bytes
            status, content_type, body = answers[1]
            assert status == 200
            if stream:
                assert content_type == "text/event-stream"
                assert body.endswith(b"data: [DONE]\n\n")
                assert body.count(b"data: ") == 3 + 3  # role, 3 deltas, finish, [DONE]
            else:
                assert content_type == "application/json"
                assert json.loads(body)["object"] == "chat.completion"
        # Only the one route exists.
        async with session.post(relayed.replace("chat/completions", "embeddings")) as resp:
            assert resp.status == 404


@pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
async def test_passthrough_under_bench_load(
    relay: tuple[str, str, list[Child]], stream: bool
) -> None:
    # The load generator's own checks: status 200, a chat.completion, streams that end
    # with [DONE]; concurrency above one so that pooled connections are reused.
    run = await run_load(relay[1], request_body(stream), stream, 60, 4, prime=4)
    assert not run.errors
    assert len(run.latencies) == 60
    assert (len(run.ttfbs) == 60) == stream


async def test_passthrough_answers_502_without_its_upstream(
    relay: tuple[str, str, list[Child]],
) -> None:
    upstream = relay[2][0]
    upstream.stop()
    async with aiohttp.ClientSession() as session:
        async with session.post(relay[1], data=request_body(False)) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["code"] == "upstream_error"
    relay[2][1].check_alive()  # the relay itself carries on


def test_passthrough_exits_2_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--port", str(port), "--upstream", "http://127.0.0.1:9"]
        done = run_python("-m", "benchmarks.passthrough", *argv, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""  # never claimed to listen
    assert f"passthrough: error: cannot listen on 127.0.0.1:{port}:" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------
# compare_litellm, without LiteLLM


def test_litellm_config_routes_gpt4o_to_the_upstream() -> None:
    config = yaml.safe_load(compare_litellm.litellm_config(8123))
    (model,) = config["model_list"]
    assert model["model_name"] == "gpt-4o"
    assert model["litellm_params"] == {
        "model": "openai/gpt-4o",
        "api_base": "http://127.0.0.1:8123/v1",
        "api_key": UPSTREAM_KEY,
    }
    assert config["litellm_settings"]["num_retries"] == 0


def test_litellm_env_is_offline_and_drops_ours() -> None:
    env = compare_litellm.litellm_env(
        {"PATH": "/usr/bin", "DATABASE_URL": "postgres://x", "PYTHONPATH": "/work/main"}
    )
    assert env["PATH"] == "/usr/bin"
    assert "DATABASE_URL" not in env
    assert "PYTHONPATH" not in env  # LiteLLM's venv must not import our packages
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["LITELLM_TELEMETRY"] == "False"


def _stats(rate: float) -> TargetStats:
    """One second of a target serving `rate` correct requests/s at concurrency 10
    (no correct response at all when `rate` is 0)."""
    requests = int(rate)
    latencies = [10 / rate] * requests if rate else []
    run = RunResult(elapsed=1.0, latencies=latencies, cpu=0.5)
    run.ttfbs = [latency / 2 for latency in latencies]
    stats = TargetStats()
    stats.add(run)
    return stats


def _comparison(litellm_rps: float) -> dict[str, Any]:
    """A compare_litellm report for fixed rates: direct 5000/s, pass-through 4000/s,
    ktproxy 2000/s, LiteLLM `litellm_rps`, in both modes, built by the real pieces."""
    rates = {"direct": 5000.0, "passthrough": 4000.0, "ktproxy": 2000.0, "litellm": litellm_rps}
    modes = {}
    for mode in ("nonstream", "stream"):
        summary = {target: _stats(rate).summary(mode == "stream") for target, rate in rates.items()}
        modes[mode] = {**summary, **compare_litellm.ratios(summary, mode)}
    return {
        "settings": {
            "requests": 1000,
            "litellm_requests": 100,
            "concurrency": 10,
            "rounds": 1,
            "warmup": 0,
            "chunks": 20,
            "ktproxy_chain": compare_litellm.DEFAULT_CHAIN,
            "litellm_version": "1.0.0",
            "cpus": 2,
        },
        "modes": modes,
        "peak_rss_kib": {"passthrough": 40960, "ktproxy": 81920, "litellm": None},
        "errors": {"total": 0, "by_kind": {}},
    }


def test_comparison_ratios() -> None:
    report = _comparison(litellm_rps=50.0)
    nonstream, stream = report["modes"]["nonstream"], report["modes"]["stream"]
    assert nonstream["ratio_rps"] == 40.0  # ktproxy / LiteLLM
    assert nonstream["passthrough_ratio_rps"] == 80.0
    assert nonstream["ktproxy_passthrough_ratio"] == 0.5
    assert nonstream["ratio_p50"] == 40.0  # LiteLLM p50 / ktproxy p50
    assert (nonstream["design_ratio"], stream["design_ratio"]) == (60.0, 100.0)
    assert nonstream["assumed_passthrough_ratio"] == 35.0
    assert stream["assumed_passthrough_ratio"] == 85.0
    assert nonstream["design_passthrough_ratio"] == round(60 / 35, 3)
    assert stream["design_passthrough_ratio"] == round(100 / 85, 3)
    json.dumps(report)  # what --json prints


def test_comparison_ratios_without_a_litellm_rate() -> None:
    modes = _comparison(litellm_rps=0.0)["modes"]
    for result in modes.values():
        assert result["litellm"]["p50_ms"] is None
        assert result["ratio_rps"] is None
        assert result["ratio_p50"] is None
        assert result["passthrough_ratio_rps"] is None
        assert result["ktproxy_passthrough_ratio"] == 0.5  # still meaningful


def test_comparison_table() -> None:
    table = compare_litellm.format_report(_comparison(litellm_rps=50.0)).splitlines()
    assert table[0].startswith("ktproxy vs LiteLLM proxy 1.0.0: one worker each")
    for label in ("upstream direct", "pass-through", "ktproxy", "LiteLLM proxy"):
        assert sum(line.startswith(f"  {label} ") for line in table) == 2  # one per mode
    assert (
        "  ktproxy/LiteLLM requests/s 40.0x (DESIGN target >= 60x: NOT met); "
        "LiteLLM p50 / ktproxy p50 40.0x"
    ) in table
    assert (
        "  pass-through/LiteLLM requests/s 80.0x (DESIGN assumed ~35x); "
        "ktproxy/pass-through 0.50x (the targets imply 1.71x)"
    ) in table
    assert (
        "  pass-through/LiteLLM requests/s 80.0x (DESIGN assumed ~85x); "
        "ktproxy/pass-through 0.50x (the targets imply 1.18x)"
    ) in table
    assert "peak RSS (VmHWM): pass-through 40.0 MiB, ktproxy 80.0 MiB, LiteLLM proxy n/a" in table
    assert table[-1] == "errors: none (every response was 200 and complete)"


def test_comparison_table_without_a_litellm_rate() -> None:
    table = compare_litellm.format_report(_comparison(litellm_rps=0.0))
    assert "ktproxy/LiteLLM requests/s n/a (DESIGN target >= 60x: n/a)" in table
    assert "LiteLLM p50 / ktproxy p50 n/a" in table
    assert "pass-through/LiteLLM requests/s n/a (DESIGN assumed ~35x)" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--litellm-requests", "0"], "--litellm-requests must be at least 1"),
        (["--warmup", "-1"], "--warmup cannot be negative"),
        (["--mode", "sideways"], "invalid choice: 'sideways'"),
    ],
)
def test_compare_litellm_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        compare_litellm.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_compare_litellm_options() -> None:
    opts = compare_litellm.parse_args(["--mode", "stream", "--requests", "7", "--json"])
    assert opts.modes == ("stream",)
    assert (opts.requests, opts.litellm_requests, opts.as_json) == (7, 300, True)
    assert compare_litellm.parse_args([]).modes == ("nonstream", "stream")
