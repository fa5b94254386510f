"""The `kt` command line: parsing and lint output in-process, the gateway as a real process.

`kt gateway run` is started as users start it (`python -m ktproxy ...` and the installed
`kt` script when there is one), on a free loopback port, and always killed by its PID
when a test ends. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner, Result

from ktproxy import __version__
from ktproxy.cli import main
from ktproxy.configcheck import check_file

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/policy-config.yaml"
SEED = "tests/configs/seed.yaml"
BAD_EVERYTHING = "tests/configs/bad-everything.yaml"
KT_SCRIPT = Path(sys.executable).parent / "kt"

STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0

TYPO = "tests/configs/typo.yaml"  # the seed with `action: redcat`
TYPO_ERRORS = [
    f"{TYPO}:12: $.policy.pii-detector.action: expected one of redact, mask, block, "
    "pseudonymize, log; got 'redcat'",
]
SEED_WARNING = (
    f"{SEED}:8: warning: $.providers.targets[0].secret_key_ref.env: environment variable "
    "OPENAI_API_KEY is not set; requests to this target need the client to send its own "
    "provider key"
)
EXAMPLE_WARNING = (
    f"{EXAMPLE}:19: warning: $.providers.targets[1].secret_key_ref.env: environment variable "
    "OPENAI_API_KEY is not set; requests to this target need the client to send its own "
    "provider key"
)


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in messages are the ones given on the command line, relative to the repo."""
    monkeypatch.chdir(REPO)


def cli_env(**values: str) -> dict[str, str | None]:
    """An environment for CliRunner: no OPENAI_API_KEY and no stray KT_* options."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KT_")}
    env["OPENAI_API_KEY"] = None
    env.update(values)
    return env


def kt(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env=cli_env(**env), catch_exceptions=False)


def lines(text: str) -> list[str]:
    return text.splitlines()


# -- version ------------------------------------------------------------------------------


def test_version_command() -> None:
    result = kt("version")
    assert result.exit_code == 0
    assert result.stdout == f"ktproxy {__version__}\n"


def test_version_option() -> None:
    result = kt("--version")
    assert result.exit_code == 0
    assert result.stdout == f"ktproxy, version {__version__}\n"


def test_help_lists_the_commands() -> None:
    result = kt("--help")
    assert result.exit_code == 0
    for command in ("gateway", "policy", "version"):
        assert command in result.stdout


# -- policy lint ----------------------------------------------------------------------------


def test_lint_example_is_ok() -> None:
    result = kt("policy", "lint", "--file", EXAMPLE, OPENAI_API_KEY="sk-test")
    assert result.exit_code == 0
    assert lines(result.stdout) == [f"{EXAMPLE}: OK (0 warning(s))"]


def test_lint_example_without_key_is_ok_with_a_warning() -> None:
    result = kt("policy", "lint", "-f", EXAMPLE)
    assert result.exit_code == 0
    assert lines(result.stdout) == [EXAMPLE_WARNING, f"{EXAMPLE}: OK (1 warning(s))"]


def test_lint_seed_is_ok_with_the_key_warning() -> None:
    result = kt("policy", "lint", "--file", SEED)
    assert result.exit_code == 0
    assert lines(result.stdout) == [SEED_WARNING, f"{SEED}: OK (1 warning(s))"]


def test_lint_prints_every_error_and_a_summary() -> None:
    result = kt("policy", "lint", "--file", TYPO)
    assert result.exit_code == 1
    warning = SEED_WARNING.replace(SEED, TYPO)
    assert lines(result.stdout) == [warning, *TYPO_ERRORS, f"{TYPO}: 1 error(s), 1 warning(s)"]


def test_lint_bad_everything_prints_the_same_report_as_check_file() -> None:
    result = kt("policy", "lint", "--file", BAD_EVERYTHING)
    assert result.exit_code == 1
    _, problems = check_file(BAD_EVERYTHING, env={})
    errors = sum(p.severity == "error" for p in problems)
    assert errors > 30
    assert lines(result.stdout) == [
        *(p.format(BAD_EVERYTHING) for p in problems),
        f"{BAD_EVERYTHING}: {errors} error(s), {len(problems) - errors} warning(s)",
    ]


def test_lint_reports_policy_options(tmp_path: Path) -> None:
    config = tmp_path / "pii.yaml"
    config.write_text(
        "providers: {targets: [{id: e, provider: mock, model: m}]}\n"
        "policies: {chain: [pii-detector]}\n"
        "policy:\n"
        "  pii-detector:\n"
        "    entities: [EMAIL, PASSPORT]\n",
        encoding="utf-8",
    )
    result = kt("policy", "lint", "--file", str(config))
    assert result.exit_code == 1
    assert lines(result.stdout)[0].startswith(
        f"{config}:5: $.policy.pii-detector.entities[1]: expected one of EMAIL, "
    )
    assert lines(result.stdout)[0].endswith("; got 'PASSPORT'")
    assert lines(result.stdout)[1:] == [f"{config}: 1 error(s), 0 warning(s)"]

    config.write_text(
        config.read_text(encoding="utf-8").replace("PASSPORT", "SECRETS"), encoding="utf-8"
    )
    result = kt("policy", "lint", "--file", str(config))
    assert result.exit_code == 0
    assert lines(result.stdout) == [f"{config}: OK (0 warning(s))"]


def test_lint_missing_file() -> None:
    result = kt("policy", "lint", "--file", "no/such/policy-config.yaml")
    assert result.exit_code == 1
    assert lines(result.stdout) == [
        "no/such/policy-config.yaml:0: $: cannot read the file: [Errno 2] No such file or "
        "directory: 'no/such/policy-config.yaml'",
        "no/such/policy-config.yaml: 1 error(s), 0 warning(s)",
    ]


def test_lint_file_from_the_environment() -> None:
    result = kt("policy", "lint", KT_POLICY_LINT_FILE=TYPO)
    assert result.exit_code == 1
    assert lines(result.stdout)[-1] == f"{TYPO}: 1 error(s), 1 warning(s)"


def test_lint_needs_a_file_option() -> None:
    result = kt("policy", "lint")
    assert result.exit_code == 2
    assert "Missing option '--file'" in result.stderr


def test_lint_rejects_a_directory() -> None:
    result = kt("policy", "lint", "--file", "examples")
    assert result.exit_code == 2
    assert "is a directory" in result.stderr


# -- gateway run, in-process (nothing is served) ------------------------------------------------


@dataclass
class RunCall:
    host: str
    port: int
    config_file: str
    workers: int = 1


@dataclass
class FakeServer:
    calls: list[RunCall] = field(default_factory=list)
    log_levels: list[str] = field(default_factory=list)


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """Replace `ktproxy.server.run` (and logging setup) so `gateway run` only parses."""
    import ktproxy.server

    fake = FakeServer()

    def run(loaded: Any, host: str, port: int, workers: int = 1) -> int:
        fake.calls.append(RunCall(host, port, loaded.filename, workers))
        return 0

    def basic_config(**kwargs: Any) -> None:
        fake.log_levels.append(kwargs["level"])

    monkeypatch.setattr(ktproxy.server, "run", run)
    monkeypatch.setattr(logging, "basicConfig", basic_config)
    return fake


def test_gateway_run_refuses_a_config_that_fails_lint(fake_server: FakeServer) -> None:
    result = kt("gateway", "run", "--policy-config", TYPO)
    assert result.exit_code == 1
    assert fake_server.calls == []  # never got to listening
    assert result.stdout == ""
    assert lines(result.stderr) == [*TYPO_ERRORS, f"{TYPO}: 1 error(s); refusing to start"]
    # The same messages as lint (whose extra line is the warning, not an error).
    lint_lines = lines(kt("policy", "lint", "--file", TYPO).stdout)
    assert set(TYPO_ERRORS) <= set(lint_lines)


def test_gateway_run_refuses_bad_everything_with_all_its_errors(fake_server: FakeServer) -> None:
    result = kt("gateway", "run", "-c", BAD_EVERYTHING)
    assert result.exit_code == 1
    assert fake_server.calls == []
    _, problems = check_file(BAD_EVERYTHING, env={}, for_start=True)
    errors = [p.format(BAD_EVERYTHING) for p in problems if p.severity == "error"]
    assert lines(result.stderr) == [
        *errors,
        f"{BAD_EVERYTHING}: {len(errors)} error(s); refusing to start",
    ]


def test_gateway_run_refuses_a_missing_file(fake_server: FakeServer) -> None:
    result = kt("gateway", "run", "--policy-config", "missing.yaml")
    assert result.exit_code == 1
    assert fake_server.calls == []
    assert "missing.yaml:0: $: cannot read the file:" in result.stderr
    assert "No such file or directory" in result.stderr
    assert lines(result.stderr)[-1] == "missing.yaml: 1 error(s); refusing to start"


def test_gateway_run_refuses_an_unset_key_with_client_key_ignore(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    config = tmp_path / "locked.yaml"
    config.write_text(
        "providers:\n  targets:\n    - id: o\n      provider: openai\n      model: gpt-4o\n"
        "      base_url: https://api.openai.com\n      secret_key_ref: {env: OPENAI_API_KEY}\n"
        "      client_key: ignore\n",
        encoding="utf-8",
    )
    lint_result = kt("policy", "lint", "--file", str(config))
    assert lint_result.exit_code == 0  # lint only warns: the key may be set where it runs
    result = kt("gateway", "run", "--policy-config", str(config))
    assert result.exit_code == 1
    assert lines(result.stderr) == [
        f"{config}:7: $.providers.targets[0].secret_key_ref.env: environment variable "
        "OPENAI_API_KEY is not set and client_key is 'ignore', so no request to this target "
        "could be authenticated",
        f"{config}: 1 error(s); refusing to start",
    ]
    assert kt("gateway", "run", "-c", str(config), OPENAI_API_KEY="sk-x").exit_code == 0


def test_gateway_run_defaults_come_from_the_config(fake_server: FakeServer) -> None:
    result = kt("gateway", "run", "--policy-config", EXAMPLE)
    assert result.exit_code == 0
    assert fake_server.calls == [RunCall("127.0.0.1", 41002, EXAMPLE)]
    assert fake_server.log_levels == ["INFO"]
    assert lines(result.stderr) == [EXAMPLE_WARNING]  # warnings are shown, start goes on


def test_gateway_run_built_in_defaults(fake_server: FakeServer, tmp_path: Path) -> None:
    config = tmp_path / "minimal.yaml"
    config.write_text(
        "providers: {targets: [{id: e, provider: mock, model: m}]}\n", encoding="utf-8"
    )
    assert kt("gateway", "run", "-c", str(config)).exit_code == 0
    assert fake_server.calls == [RunCall("127.0.0.1", 41002, str(config))]
    assert fake_server.log_levels == ["INFO"]


def test_gateway_run_config_settings(fake_server: FakeServer, tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "gateway: {host: '::1', port: 41999, log_level: warning}\n"
        "providers: {targets: [{id: e, provider: mock, model: m}]}\n",
        encoding="utf-8",
    )
    assert kt("gateway", "run", "-c", str(config)).exit_code == 0
    assert fake_server.calls == [RunCall("::1", 41999, str(config))]
    assert fake_server.log_levels == ["WARNING"]


def test_gateway_run_flags_override_the_config(fake_server: FakeServer) -> None:
    result = kt(
        "gateway", "run", "-c", EXAMPLE, "--host", "::1", "--port", "8123", "--log-level", "DEBUG"
    )
    assert result.exit_code == 0
    assert fake_server.calls == [RunCall("::1", 8123, EXAMPLE)]
    assert fake_server.log_levels == ["DEBUG"]


def test_gateway_run_options_from_the_environment(fake_server: FakeServer) -> None:
    result = kt(
        "gateway",
        "run",
        KT_GATEWAY_RUN_POLICY_CONFIG=EXAMPLE,
        KT_GATEWAY_RUN_PORT="9123",
        KT_GATEWAY_RUN_LOG_LEVEL="error",
    )
    assert result.exit_code == 0
    assert fake_server.calls == [RunCall("127.0.0.1", 9123, EXAMPLE)]
    assert fake_server.log_levels == ["ERROR"]
    # A flag on the command line wins over the environment.
    result = kt("gateway", "run", "-c", EXAMPLE, "--port", "9124", KT_GATEWAY_RUN_PORT="9123")
    assert result.exit_code == 0
    assert fake_server.calls[-1].port == 9124


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_gateway_run_rejects_a_bad_port(fake_server: FakeServer, port: str) -> None:
    result = kt("gateway", "run", "-c", EXAMPLE, "--port", port)
    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.stderr
    assert fake_server.calls == []


def test_gateway_run_rejects_a_bad_log_level(fake_server: FakeServer) -> None:
    result = kt("gateway", "run", "-c", EXAMPLE, "--log-level", "loud")
    assert result.exit_code == 2
    assert "Invalid value for '--log-level'" in result.stderr
    assert fake_server.calls == []


def test_gateway_run_needs_a_config(fake_server: FakeServer) -> None:
    result = kt("gateway", "run")
    assert result.exit_code == 2
    assert "Missing option '--policy-config'" in result.stderr


# -- gateway run, as a real process -------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        free_port("::1")
    except OSError:
        return False
    return True


def process_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KT_") and k != "OPENAI_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


@dataclass
class GatewayProcess:
    popen: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    new_stdout: queue.Queue[str] = field(default_factory=queue.Queue)
    readers: list[threading.Thread] = field(default_factory=list)
    cwd: Path = field(default_factory=Path)  # where the gateway runs (and writes)

    def wait_for_stdout(self, prefix: str, timeout: float = STARTUP_TIMEOUT) -> str:
        """The first stdout line starting with `prefix`; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.new_stdout.get(timeout=0.1)
            except queue.Empty:
                if self.popen.poll() is not None and self.new_stdout.empty():
                    self.join_readers()
                    pytest.fail(f"gateway exited with {self.popen.returncode}: {self.output()}")
                continue
            if line.startswith(prefix):
                return line
        pytest.fail(f"no {prefix!r} within {timeout}s: {self.output()}")

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gateway still running after {timeout}s: {self.output()}")
        self.join_readers()
        return code

    def join_readers(self) -> None:
        for reader in self.readers:
            reader.join(timeout=5)

    def output(self) -> str:
        return f"stdout={self.stdout!r} stderr={self.stderr!r}"


def _pump(stream: IO[str], sink: list[str], notify: queue.Queue[str] | None) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))
        if notify is not None:
            notify.put(line.rstrip("\n"))


@contextlib.contextmanager
def gateway_process(
    command: list[str], args: list[str], env: Mapping[str, str] | None = None
) -> Iterator[GatewayProcess]:
    """Start `kt ...args`; the process is killed by its PID when the block ends.

    It runs in a scratch directory holding copies of `examples/` and `tests/configs/`
    (so relative config paths, and the messages naming them, are as in the repository)
    where whatever the gateway writes (the example's audit database) is thrown away.
    """
    scratch = Path(tempfile.mkdtemp(prefix="kt-gateway-"))
    for rel in ("examples", "tests/configs"):
        shutil.copytree(REPO / rel, scratch / rel)
    popen = subprocess.Popen(
        [*command, *args],
        cwd=scratch,
        env=process_env() if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    proc = GatewayProcess(popen, cwd=scratch)
    assert popen.stdout is not None and popen.stderr is not None
    proc.readers = [
        threading.Thread(target=_pump, args=(popen.stdout, proc.stdout, proc.new_stdout)),
        threading.Thread(target=_pump, args=(popen.stderr, proc.stderr, None)),
    ]
    for reader in proc.readers:
        reader.daemon = True
        reader.start()
    try:
        yield proc
    finally:
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGKILL)
        try:
            popen.wait(timeout=EXIT_TIMEOUT)
        finally:
            proc.join_readers()
            popen.stdout.close()
            popen.stderr.close()
            shutil.rmtree(scratch, ignore_errors=True)


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def assert_serves(origin: str) -> None:
    """Health, readiness and a completion from the example's mock echo target."""
    assert http("GET", f"{origin}/healthz") == (200, {"status": "ok"})
    assert http("GET", f"{origin}/readyz") == (200, {"status": "ready"})
    status, reply = http(
        "POST",
        f"{origin}/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "echo me, gateway"}]},
    )
    assert status == 200, reply
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {
        "role": "assistant",
        "content": "echo me, gateway",
        "refusal": None,
    }


def assert_not_listening(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        assert sock.connect_ex((host, port)) != 0, f"something listens on {host}:{port}"


def _commands() -> list[Any]:
    return [
        pytest.param([sys.executable, "-m", "ktproxy"], id="python-m-ktproxy"),
        pytest.param(
            [str(KT_SCRIPT)],
            id="kt-script",
            marks=pytest.mark.skipif(
                not KT_SCRIPT.exists(), reason=f"{KT_SCRIPT} is not installed"
            ),
        ),
    ]


@pytest.mark.parametrize("command", _commands())
def test_gateway_serves_and_stops_on_sigterm(command: list[str]) -> None:
    port = free_port()
    args = ["gateway", "run", "--policy-config", EXAMPLE, "--port", str(port)]
    with gateway_process(command, args) as proc:
        line = proc.wait_for_stdout("Gateway listening on")
        assert line == f"Gateway listening on http://localhost:{port}"
        assert_serves(f"http://127.0.0.1:{port}")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()
        assert EXAMPLE_WARNING in proc.stderr
        assert not any("Traceback" in line for line in proc.stderr), proc.output()
        # The example's embedded defaults: the audit record of that completion is in
        # the SQLite store, written out before the process exited.
        from ktproxy.audit.sink import Query
        from ktproxy.audit.sqlite_sink import SQLiteSink

        store = SQLiteSink(proc.cwd / "ktproxy-audit.db")
        (record,) = store.query(Query()).records
        store.close()
        assert (record.model, record.status, record.target) == ("gpt-4o", 200, "mock-echo")
    assert_not_listening("127.0.0.1", port)


def test_gateway_port_from_the_environment_and_sigint() -> None:
    port = free_port()
    env = process_env(KT_GATEWAY_RUN_PORT=str(port))
    with gateway_process(
        [sys.executable, "-m", "ktproxy"], ["gateway", "run", "-c", EXAMPLE], env
    ) as proc:
        assert proc.wait_for_stdout("Gateway") == f"Gateway listening on http://localhost:{port}"
        assert http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200
        proc.popen.send_signal(signal.SIGINT)
        assert proc.wait() == 0, proc.output()
        assert not any("Traceback" in line for line in proc.stderr), proc.output()


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_gateway_on_the_ipv6_loopback() -> None:
    port = free_port("::1")
    args = ["gateway", "run", "-c", EXAMPLE, "--host", "::1", "--port", str(port)]
    with gateway_process([sys.executable, "-m", "ktproxy"], args) as proc:
        assert proc.wait_for_stdout("Gateway") == f"Gateway listening on http://[::1]:{port}"
        assert_serves(f"http://[::1]:{port}")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()


def test_gateway_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["gateway", "run", "-c", EXAMPLE, "--port", str(port)]
        with gateway_process([sys.executable, "-m", "ktproxy"], args) as proc:
            code = proc.wait(timeout=STARTUP_TIMEOUT)
    assert code != 0
    assert not any(line.startswith("Gateway listening") for line in proc.stdout)
    messages = [line for line in proc.stderr if "cannot listen" in line]
    assert len(messages) == 1, proc.output()
    assert messages[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in messages[0].lower()
    assert not any("Traceback" in line for line in proc.stderr), proc.output()


def test_gateway_refuses_a_bad_config_and_does_not_listen() -> None:
    port = free_port()
    args = ["gateway", "run", "--policy-config", TYPO, "--port", str(port)]
    with gateway_process([sys.executable, "-m", "ktproxy"], args) as proc:
        code = proc.wait(timeout=STARTUP_TIMEOUT)
    assert code == 1
    assert proc.stdout == []
    assert proc.stderr == [*TYPO_ERRORS, f"{TYPO}: 1 error(s); refusing to start"]
    assert_not_listening("127.0.0.1", port)


def test_sigterm_lets_an_inflight_stream_finish(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(
        "providers:\n"
        "  targets:\n"
        "    - id: slow\n"
        "      provider: mock\n"
        "      model: slow-model\n"
        "      mock: {mode: fixed, reply: 'one two three four five six', chunk_chars: 4,\n"
        "             chunk_delay_ms: 150}\n",
        encoding="utf-8",
    )
    port = free_port("127.0.0.1")
    args = ["gateway", "run", "-c", str(config), "--port", str(port)]
    with gateway_process([sys.executable, "-m", "ktproxy"], args) as proc:
        proc.wait_for_stdout("Gateway listening on")
        body = json.dumps(
            {"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            first = response.readline()
            assert first.startswith(b"data: ")
            proc.popen.send_signal(signal.SIGTERM)
            rest = response.read()
        assert rest.endswith(b"data: [DONE]\n\n"), rest
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in (first + rest).split(b"\n")
            if line.startswith(b"data: {")
        )
        assert text == "one two three four five six"
        assert proc.wait() == 0, proc.output()
