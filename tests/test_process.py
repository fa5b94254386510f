"""The gateway as a process: workers on one port, SIGHUP reload, drain on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import free_port
from tests.test_cli import EXIT_TIMEOUT, STARTUP_TIMEOUT, GatewayProcess, gateway_process, http

KT = [sys.executable, "-m", "ktproxy"]


def config_text(chain: str = "[]", extra: str = "") -> str:
    return f"""
providers:
  targets:
    - id: echo
      provider: mock
      model: gpt-4o
      mock: {{mode: echo, chunk_chars: 4}}
    - id: slow
      provider: mock
      model: slow-model
      mock: {{mode: fixed, reply: 'one two three four five six seven eight', chunk_chars: 4,
             chunk_delay_ms: 100}}
policies:
  chain: {chain}
{extra}
"""


def gateway_args(tmp_path: Path, text: str, *options: str) -> tuple[Path, int, list[str]]:
    """Write config `text` to a file in `tmp_path`; the file, a free port, and the
    `gateway run` arguments serving that file on that port with `options`."""
    config = tmp_path / "c.yaml"
    config.write_text(text, encoding="utf-8")
    port = free_port()
    return config, port, ["gateway", "run", "-c", str(config), "--port", str(port), *options]


def ask(port: int, text: str) -> str:
    status, reply = http(
        "POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]},
    )
    assert status == 200, reply
    return str(reply["choices"][0]["message"]["content"])


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    """Poll `predicate` until it holds; connection errors mean "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def test_workers_share_a_port_and_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    _, port, args = gateway_args(tmp_path, config_text(), "--workers", "2")
    with gateway_process(KT, args) as proc:
        line = proc.wait_for_stdout("Gateway listening")
        assert line == f"Gateway listening on http://localhost:{port} (2 workers)"
        assert wait_until(lambda: len(children(proc.popen.pid)) == 2)
        assert wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200)
        for i in range(20):
            assert ask(port, f"hello {i}") == f"hello {i}"
        workers = children(proc.popen.pid)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert wait_until(
            lambda: victim not in children(proc.popen.pid) and len(children(proc.popen.pid)) == 2
        ), proc.output()
        for i in range(20):
            assert ask(port, f"again {i}") == f"again {i}"
        assert any("restarting" in line for line in proc.stderr), proc.output()
        survivors = children(proc.popen.pid)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()
        assert all(not Path(f"/proc/{pid}").exists() for pid in survivors)


def test_sighup_reloads_a_good_config_and_keeps_the_old_on_a_bad_one(tmp_path: Path) -> None:
    pid_file = tmp_path / "kt.pid"
    config, port, args = gateway_args(tmp_path, config_text(), "--pid-file", str(pid_file))
    with gateway_process(KT, args) as proc:
        proc.wait_for_stdout("Gateway listening")
        assert ask(port, "mail me at a.b@example.com") == "mail me at a.b@example.com"
        config.write_text(config_text("[pii-detector]"), encoding="utf-8")
        reload = [*KT, "gateway", "reload", "--pid-file", str(pid_file)]
        done = subprocess.run(reload, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert wait_until(lambda: "[REDACTED:EMAIL]" in ask(port, "mail a.b@example.com"))
        # A config with an error is refused; the one that works keeps serving.
        config.write_text(
            config_text("[pii-detector]").replace("mode: echo", "mode: loud"), "utf-8"
        )
        proc.popen.send_signal(signal.SIGHUP)
        assert wait_until(lambda: any("reload rejected" in ln for ln in proc.stderr)), proc.output()
        assert ask(port, "mail a.b@example.com") == "mail [REDACTED:EMAIL]"
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()
    assert not pid_file.exists()


def test_drain_keeps_a_stream_alive_while_readyz_says_503(tmp_path: Path) -> None:
    text = config_text(extra="gateway: {drain_grace: 1.5, drain_timeout: 20}")
    _, port, args = gateway_args(tmp_path, text)
    with gateway_process(KT, args) as proc:
        proc.wait_for_stdout("Gateway listening")
        body = json.dumps(
            {"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        received: list[bytes] = []

        def read_stream() -> None:
            with urllib.request.urlopen(request, timeout=30) as response:
                received.append(response.read())

        reader = threading.Thread(target=read_stream)
        reader.start()
        time.sleep(0.3)  # the stream is under way
        proc.popen.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # In the grace period: not ready, but still accepting connections.
        assert http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 503
        reader.join(30)
        assert received and received[0].rstrip().endswith(b"data: [DONE]")
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in received[0].split(b"\n")
            if line.startswith(b"data: {")
        )
        assert text == "one two three four five six seven eight"
        assert proc.wait(timeout=EXIT_TIMEOUT + 20) == 0, proc.output()


def test_workers_die_with_a_supervisor_that_is_killed(tmp_path: Path) -> None:
    _, port, args = gateway_args(tmp_path, config_text(), "--workers", "2")
    with gateway_process(KT, args) as proc:
        proc.wait_for_stdout("Gateway listening")
        assert wait_until(lambda: len(children(proc.popen.pid)) == 2)
        workers = children(proc.popen.pid)
        proc.popen.kill()  # SIGKILL: the supervisor cannot pass anything on
        proc.popen.wait(timeout=10)
        assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in workers))


# -- a worker that replaces a dead one, and SIGHUP while a worker starts --------------


def catches_sighup(pid: int) -> bool:
    """Has `pid` installed its SIGHUP handler (its loop is up and its app started)?"""
    status = Path(f"/proc/{pid}/status").read_text()
    (caught,) = (ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGHUP - 1)))


def log_records(proc: GatewayProcess) -> list[dict[str, Any]]:
    """The gateway's JSON log lines so far (stderr is a pipe, so the format is JSON)."""
    records = []
    for line in list(proc.stderr):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def start_two_workers(proc: GatewayProcess, port: int) -> set[int]:
    proc.wait_for_stdout("Gateway listening")
    assert wait_until(lambda: len(children(proc.popen.pid)) == 2), proc.output()
    assert wait_until(lambda: all(catches_sighup(p) for p in children(proc.popen.pid)))
    assert wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200)
    return children(proc.popen.pid)


def replace(proc: GatewayProcess, victim: int) -> int:
    """SIGKILL worker `victim` (of this test's gateway); the pid of its replacement,
    once it has started (it handles SIGHUP)."""
    before = children(proc.popen.pid)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(children(proc.popen.pid) - before) == 1), proc.output()
    (new,) = children(proc.popen.pid) - before
    assert wait_until(lambda: catches_sighup(new)), proc.output()
    return new


def status_for(port: int, model: str) -> int:
    """A chat completion for `model` on a new connection (SO_REUSEPORT picks the worker)."""
    status, _ = http(
        "POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    return status


def assert_worker_serves(proc: GatewayProcess, port: int, pid: int, model: str) -> None:
    """Requests for `model` succeed, whichever worker answers, until worker `pid` has
    answered one (its request log line says so)."""

    def answered() -> bool:
        assert status_for(port, model) == 200, proc.output()
        return any(
            r.get("msg") == "request" and r.get("pid") == pid and r.get("model") == model
            for r in log_records(proc)
        )

    assert wait_until(answered, timeout=30), f"worker {pid} never answered: {proc.output()}"


def reloaded_by(proc: GatewayProcess) -> list[int]:
    """The pids of the workers' "config reloaded" log lines, in order."""
    return [
        int(r["pid"])
        for r in log_records(proc)
        if str(r.get("msg", "")).startswith("config reloaded")
    ]


RENAMED = config_text().replace("model: gpt-4o", "model: gpt-5o")  # a new model served


def test_a_replacement_worker_serves_the_config_of_the_last_reload(tmp_path: Path) -> None:
    config, port, args = gateway_args(tmp_path, config_text(), "--workers", "2")
    with gateway_process(KT, args) as proc:
        workers = start_two_workers(proc, port)
        assert status_for(port, "gpt-5o") == 404
        config.write_text(RENAMED, encoding="utf-8")
        proc.popen.send_signal(signal.SIGHUP)
        assert wait_until(lambda: sorted(reloaded_by(proc)) == sorted(workers)), proc.output()
        new = replace(proc, min(workers))
        assert_worker_serves(proc, port, new, "gpt-5o")
        assert status_for(port, "gpt-4o") == 404  # nobody serves the old config
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()


def test_a_replacement_worker_keeps_the_last_good_config_over_a_rejected_file(
    tmp_path: Path,
) -> None:
    config, port, args = gateway_args(tmp_path, config_text(), "--workers", "2")
    with gateway_process(KT, args) as proc:
        workers = start_two_workers(proc, port)
        config.write_text(RENAMED, encoding="utf-8")
        proc.popen.send_signal(signal.SIGHUP)
        assert wait_until(lambda: sorted(reloaded_by(proc)) == sorted(workers)), proc.output()
        config.write_text(RENAMED.replace("mode: echo", "mode: loud"), encoding="utf-8")
        proc.popen.send_signal(signal.SIGHUP)

        def rejected() -> set[int]:
            return {
                int(r["pid"]) for r in log_records(proc) if "reload rejected" in r.get("msg", "")
            }

        assert wait_until(lambda: rejected() == workers), proc.output()
        new = replace(proc, max(workers))  # not on the file: it has an error
        assert_worker_serves(proc, port, new, "gpt-5o")
        assert any(
            str(r.get("msg")).startswith("supervisor: ") and "keep the last good" in r["msg"]
            for r in log_records(proc)
        ), proc.output()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()


def test_sighup_while_workers_start_neither_kills_them_nor_is_lost(tmp_path: Path) -> None:
    _, port, args = gateway_args(tmp_path, config_text(), "--workers", "2")
    with gateway_process(KT, args) as proc:
        supervisor = proc.popen.pid

        def hup_until(done: Callable[[], bool]) -> None:
            """SIGHUP the supervisor (which passes it on at once to every worker, those
            it has just forked included) until `done`, and a few more times."""
            deadline = time.monotonic() + STARTUP_TIMEOUT
            extra = 20
            while extra and time.monotonic() < deadline:
                os.kill(supervisor, signal.SIGHUP)
                with contextlib.suppress(OSError):
                    if done():
                        extra -= 1
                time.sleep(0.02)
            assert not extra, proc.output()

        def restarts() -> int:
            return sum("restarting" in line for line in proc.stderr)

        # The supervisor prints this line once it has forked both workers: they are
        # starting while the SIGHUPs arrive.
        proc.wait_for_stdout("Gateway listening")
        hup_until(
            lambda: (
                len(children(supervisor)) == 2
                and all(catches_sighup(p) for p in children(supervisor))
            )
        )
        workers = children(supervisor)
        assert restarts() == 0, proc.output()
        # Each worker acts on a SIGHUP it got while starting, once it can.
        assert wait_until(lambda: set(reloaded_by(proc)) == workers), proc.output()

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        hup_until(
            lambda: (
                victim not in children(supervisor)
                and len(children(supervisor)) == 2
                and all(catches_sighup(p) for p in children(supervisor))
            )
        )
        assert restarts() == 1, proc.output()  # the one killed, not the one started
        (new,) = children(supervisor) - workers
        assert wait_until(lambda: new in reloaded_by(proc)), proc.output()
        assert_worker_serves(proc, port, new, "gpt-4o")
        assert children(supervisor) == workers - {victim} | {new}
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()


def test_workers_with_a_configured_instance_write_one_chain_each(tmp_path: Path) -> None:
    """`gateway.instance` names one chain per worker slot (two processes extending one
    chain would fork it); a replacement continues its predecessor's chain."""
    db = tmp_path / "audit.db"
    text = config_text(
        "[audit-logger]",
        f'gateway: {{instance: gw}}\npolicy:\n  audit-logger: {{path: "{db}", '
        "flush_interval_ms: 5}\n",
    )
    config, port, args = gateway_args(tmp_path, text, "--workers", "2")
    with gateway_process(KT, args) as proc:
        workers = start_two_workers(proc, port)
        new = replace(proc, min(workers))
        assert_worker_serves(proc, port, new, "gpt-4o")  # the replacement is listening
        for i in range(40):  # fresh connections: both workers answer some
            assert ask(port, f"hello {i}") == f"hello {i}"
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()
    verify = subprocess.run(
        [*KT, "audit", "verify", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    query = subprocess.run(
        [*KT, "audit", "query", "-c", str(config), "--limit", "1000", "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        cwd=tmp_path,
    )
    assert query.returncode == 0, query.stderr
    records = [json.loads(line) for line in query.stdout.splitlines() if line.strip()]
    assert len(records) >= 40
    assert {r["chain"] for r in records} == {"gw-w0", "gw-w1"}
