"""Process life: the event loop, the listener, signals, drain, reload and workers.

One worker serves in the foreground. On SIGTERM or SIGINT it stops being ready at
once (`/readyz` answers 503), keeps accepting for `gateway.drain_grace` seconds so a
load balancer notices, closes its listener, lets in-flight requests and streams
finish within `gateway.drain_timeout`, then runs the app's cleanup (the audit queue
is written out). SIGHUP re-reads the config: a good one is swapped in for new
requests, a bad one is logged and the old one keeps serving.

With `workers > 1` this process is a supervisor: it forks the workers (before any
event loop exists), each listening on the same port with SO_REUSEPORT; a worker that
dies is replaced and the event logged; SIGTERM, SIGINT and SIGHUP are passed on to
every worker, and the supervisor exits once they all have. The workers share a fresh
directory for Prometheus multiprocess metrics, which the supervisor removes at exit.

The supervisor is the fleet's record of the current config. On SIGHUP it re-reads and
checks the file itself before passing the signal on: a good config becomes its
current one, a bad one is logged and the last good one stays current. Each worker
then re-reads the file as a single worker does. A worker that replaces a dead one is
forked with the supervisor's current config, so it serves what the others serve: the
last config a reload accepted, never a rejected file nor one edited on disk without
a SIGHUP. (Two edits of the file a few milliseconds apart can still be read
differently by the supervisor and the workers; the next SIGHUP makes them agree. A
worker whose reload fails while starting a good config keeps its old one, as
logged; a replacement starts on the new one.)

A worker is forked with SIGHUP blocked and unblocks it only once its loop handles it
and its app has started, so a reload asked for while it starts is neither fatal (the
default action ends the process) nor lost (it is delivered then, and the worker
re-reads the file). A single gateway does the same from the start of `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web
from prometheus_client.multiprocess import mark_process_dead

from ktproxy.app import make_app, reload
from ktproxy.configcheck import ConfigError, LoadedConfig, load_config
from ktproxy.metrics import metrics_app, use_multiprocess
from ktproxy.policies.resources import set_worker_slot
from ktproxy.protocol import GuardedRunner
from ktproxy.state import STATE

log = logging.getLogger("ktproxy.server")

# A worker that dies this soon after its start, this many times in a row, is not
# restarted again (the supervisor gives up instead of spinning).
CRASH_WINDOW_S = 2.0
CRASH_LIMIT = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Signals the supervisor passes on; blocked across a fork (see `_spawn`).
_PASSED_ON = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def display_url(host: str, port: int) -> str:
    """The URL to print: IPv4 loopback shows as `localhost`, IPv6 gets brackets."""
    if host in ("127.0.0.1", "localhost"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(
    loaded: LoadedConfig,
    host: str,
    port: int,
    reuse_port: bool = False,
    metrics_port: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain and clean up; SIGHUP reloads. With
    `metrics_port`, `/metrics` is served on that port too."""
    app = make_app(loaded)
    settings = loaded.config.gateway
    runner = GuardedRunner(
        app,
        header_timeout=settings.header_timeout,  # slow-drip request heads are cut (408)
        handler_cancellation=True,  # a client that goes away releases its upstream at once
        access_log=None,
        shutdown_timeout=settings.drain_timeout,
        # After an early answer (413), read and discard what the client still sends
        # for 2 s at most (aiohttp's default is 10 s).
        lingering_time=2.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloading: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(reload(app))
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    await runner.setup()
    metrics_runner = None
    try:
        # Only now: a reload during `setup` would race the runtime's start (and the
        # start's runtime would replace the reloaded one). SIGHUP has been blocked since
        # `run` or the fork; one that came meanwhile is delivered here.
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        site = web.TCPSite(
            runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
        )
        await site.start()
        if metrics_port is not None:
            metrics_runner = web.AppRunner(metrics_app(app), access_log=None)
            await metrics_runner.setup()
            metrics_site = web.TCPSite(
                metrics_runner,
                host,
                metrics_port,
                reuse_address=True,
                reuse_port=reuse_port or None,
            )
            try:
                await metrics_site.start()
            except OSError as exc:  # say which of the two ports it was
                raise OSError(exc.errno, f"metrics port {metrics_port}: {exc.strerror}") from None
        if not reuse_port:
            print(f"Gateway listening on {display_url(host, port)}", flush=True)
            _print_metrics_url(host, metrics_port)
        await stop.wait()
        state = app[STATE]
        state.draining = True
        log.info("draining: %d request(s) in flight", state.inflight)
        if settings.drain_grace > 0:
            stop.clear()  # a second signal ends the grace period early
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.drain_grace)
    finally:
        for task in list(reloading):
            task.cancel()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


def _print_metrics_url(host: str, metrics_port: int | None) -> None:
    if metrics_port is not None:
        print(f"Metrics on {display_url(host, metrics_port)}/metrics", flush=True)


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
    else:
        uvloop.run(main)


def run(
    loaded: LoadedConfig, host: str, port: int, workers: int = 1, metrics_port: int | None = None
) -> int:
    """Run the gateway in the foreground; the process exit code."""
    if workers > 1:
        return supervise(loaded, host, port, workers, metrics_port)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # until `serve` handles it
    try:
        _run_loop(serve(loaded, host, port, metrics_port=metrics_port))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send this worker SIGTERM when the supervisor dies, however it dies
    (a worker must never outlive it, holding the port and its pipes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM must do
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(
    loaded: LoadedConfig,
    host: str,
    port: int,
    parent: int,
    metrics_dir: str,
    metrics_port: int | None,
    slot: int,
) -> int:
    """A forked worker's life (its exit code). It starts with `_PASSED_ON` blocked."""
    set_worker_slot(slot)  # its audit chain with a configured gateway.instance
    for sig in _PASSED_ON:
        signal.signal(sig, signal.SIG_DFL)  # the event loop installs its own
    # A stop sent since the fork ends the worker now; SIGHUP stays blocked (and a
    # reload pending) until `serve` can handle it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PASSED_ON - {signal.SIGHUP})
    _die_with_parent(parent)
    use_multiprocess(metrics_dir)  # before the app, and so any metric, exists
    try:
        _run_loop(serve(loaded, host, port, reuse_port=True, metrics_port=metrics_port))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _spawn(
    loaded: LoadedConfig,
    host: str,
    port: int,
    metrics_dir: str,
    metrics_port: int | None,
    slot: int,
) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    # Blocked across the fork, so that no signal meets the child with the supervisor's
    # handler or, later, the default action; the parent's mask is restored at once.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _PASSED_ON)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:  # the worker
        code = 1
        try:
            code = _worker(loaded, host, port, parent, metrics_dir, metrics_port, slot)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def supervise(
    loaded: LoadedConfig, host: str, port: int, workers: int, metrics_port: int | None = None
) -> int:
    """Fork `workers` workers on one port and keep that many alive until told to stop.

    The workers share a fresh directory for Prometheus multiprocess metrics (any
    worker's `/metrics` sums them all); it is removed when the supervisor exits.
    """
    metrics_dir = tempfile.mkdtemp(prefix="ktproxy-metrics-")
    try:
        return _supervise(loaded, host, port, workers, metrics_dir, metrics_port)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    loaded: LoadedConfig,
    host: str,
    port: int,
    workers: int,
    metrics_dir: str,
    metrics_port: int | None,
) -> int:
    pending: list[int] = []  # signals to pass on, in arrival order

    def remember(signum: int, _frame: object) -> None:
        pending.append(signum)

    for sig in _PASSED_ON:
        signal.signal(sig, remember)
    current = loaded  # what the workers serve: what a new worker is forked with
    started: dict[int, float] = {}
    slots: dict[int, int] = {}  # pid -> slot; a replacement takes its predecessor's
    for slot in range(workers):
        pid = _spawn(current, host, port, metrics_dir, metrics_port, slot)
        started[pid], slots[pid] = time.monotonic(), slot
    print(f"Gateway listening on {display_url(host, port)} ({workers} workers)", flush=True)
    _print_metrics_url(host, metrics_port)
    log.info("workers started: %s", sorted(started))
    stopping = False
    quick_deaths = 0
    code = 0
    while started:
        arrived = pending[:]
        del pending[: len(arrived)]  # the handler may append meanwhile
        for signum in arrived:
            if signum == signal.SIGHUP:
                continue
            stopping = True  # each stop is passed on: a second one ends a drain's grace
            _pass_on(started, signal.SIGTERM)
        if signal.SIGHUP in arrived:
            # Once however many came: a burst must not keep the supervisor from
            # replacing workers. The file is checked before the workers read it.
            if not stopping:
                current = _reread(current)
            _pass_on(started, signal.SIGHUP)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
            continue
        born = started.pop(pid, None)
        if born is None:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        # Its counters keep counting in the sums; its in-flight gauges no longer do.
        mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
        if stopping:
            code = code or (exit_code if exit_code > 0 else 0)
            continue
        log.warning("worker %d exited (%s); starting a new one", pid, _describe_exit(exit_code))
        print(f"worker {pid} exited ({_describe_exit(exit_code)}); restarting", file=sys.stderr)
        quick_deaths = quick_deaths + 1 if time.monotonic() - born < CRASH_WINDOW_S else 0
        if quick_deaths >= CRASH_LIMIT or exit_code == 2:
            print("error: workers keep failing at start; stopping", file=sys.stderr)
            stopping = True
            code = exit_code if exit_code > 0 else 1
            _pass_on(started, signal.SIGTERM)
            continue
        slot = slots.pop(pid)
        pid = _spawn(current, host, port, metrics_dir, metrics_port, slot)
        started[pid], slots[pid] = time.monotonic(), slot
    return code


def _pass_on(workers: dict[int, float], signum: int) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reread(current: LoadedConfig) -> LoadedConfig:
    """The supervisor's side of a reload: the config file if it passes the check (the
    workers, reading the same file, take it too), else `current`, which stays what
    new workers get. The workers log the problems; one line here says what new
    workers will start on."""
    filename = current.filename
    try:
        loaded = load_config(filename)
    except ConfigError as exc:
        log.error(
            "supervisor: %s has %d error(s); new workers keep the last good config",
            filename,
            len(exc.problems),
        )
        return current
    log.info("supervisor: new workers will start on the config read from %s", filename)
    return loaded


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
