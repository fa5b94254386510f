"""The gateway as a process: workers on one port, SIGHUP reload, drain on SIGTERM."""

from __future__ import annotations

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

from tests.harness import free_port
from tests.test_cli import EXIT_TIMEOUT, gateway_process, http

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
    config = tmp_path / "c.yaml"
    config.write_text(config_text(), encoding="utf-8")
    port = free_port()
    args = ["gateway", "run", "-c", str(config), "--port", str(port), "--workers", "2"]
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
    config = tmp_path / "c.yaml"
    config.write_text(config_text(), encoding="utf-8")
    pid_file = tmp_path / "kt.pid"
    port = free_port()
    args = ["gateway", "run", "-c", str(config), "--port", str(port), "--pid-file", str(pid_file)]
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
    config = tmp_path / "c.yaml"
    config.write_text(
        config_text(extra="gateway: {drain_grace: 1.5, drain_timeout: 20}"), encoding="utf-8"
    )
    port = free_port()
    args = ["gateway", "run", "-c", str(config), "--port", str(port)]
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
    config = tmp_path / "c.yaml"
    config.write_text(config_text(), encoding="utf-8")
    port = free_port()
    args = ["gateway", "run", "-c", str(config), "--port", str(port), "--workers", "2"]
    with gateway_process(KT, args) as proc:
        proc.wait_for_stdout("Gateway listening")
        assert wait_until(lambda: len(children(proc.popen.pid)) == 2)
        workers = children(proc.popen.pid)
        proc.popen.kill()  # SIGKILL: the supervisor cannot pass anything on
        proc.popen.wait(timeout=10)
        assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in workers))
