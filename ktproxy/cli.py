"""The `kt` command line: thin parsing around functions that do the work.

Every option can also come from the environment with the `KT_` prefix, the command
path and the option's name (`KT_GATEWAY_RUN_PORT=8080`,
`KT_GATEWAY_RUN_POLICY_CONFIG=policy-config.yaml`, `KT_POLICY_LINT_FILE=...`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ktproxy import __version__
from ktproxy.configcheck import check_file, load_config

if TYPE_CHECKING:
    from ktproxy.policies.audit_logger import AuditOptions


@click.group(context_settings={"auto_envvar_prefix": "KT", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ktproxy")
def main() -> None:
    """ktproxy: a governance gateway for LLM traffic."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"ktproxy {__version__}")


@main.group()
def policy() -> None:
    """Work with policy config files."""


@policy.command("lint")
@click.option(
    "--file",
    "-f",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="KT_POLICY_LINT_FILE",
    help="Policy config file to check.",
)
def policy_lint(path: str) -> None:
    """Check a policy config; print every problem with file, line and path."""
    loaded, problems = check_file(path)
    for problem in problems:
        click.echo(problem.format(path))
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if loaded is None:
        click.echo(f"{path}: {errors} error(s), {warnings} warning(s)")
        sys.exit(1)
    click.echo(f"{path}: OK ({warnings} warning(s))")


@main.group()
def gateway() -> None:
    """Run the gateway."""


@gateway.command("run")
@click.option(
    "--policy-config",
    "-c",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="KT_GATEWAY_RUN_POLICY_CONFIG",
    help="Policy config file.",
)
@click.option("--host", default=None, help="Address to listen on [config, else 127.0.0.1].")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Port to listen on [config, else 41002].",
)
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level [config, else info].",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(["auto", "json", "text"], case_sensitive=False),
    help="Log lines as JSON or key=value text; auto: text on a terminal [config, else auto].",
)
@click.option(
    "--workers",
    default="1",
    show_default=True,
    help="Worker processes on one port (SO_REUSEPORT); 'auto' = one per CPU.",
)
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the gateway's PID here (for `kt gateway reload`).",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Serve /metrics on this port too (same host).",
)
def gateway_run(
    path: str,
    host: str | None,
    port: int | None,
    log_level: str | None,
    log_format: str | None,
    workers: str,
    pid_file: str | None,
    metrics_port: int | None,
) -> None:
    """Start the gateway on a policy config (refuses a config that fails lint)."""
    from ktproxy.configcheck import ConfigError
    from ktproxy.logs import setup_logging
    from ktproxy.server import run

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        click.echo(f"{path}: {len(exc.problems)} error(s); refusing to start", err=True)
        sys.exit(1)
    for warning in loaded.warnings:
        click.echo(warning.format(path), err=True)
    settings = loaded.config.gateway
    setup_logging(log_level or settings.log_level, (log_format or settings.log_format).lower())
    count = _workers(workers)
    if pid_file:
        Path(pid_file).write_text(f"{os.getpid()}\n", encoding="utf-8")
    try:
        extra = {} if metrics_port is None else {"metrics_port": metrics_port}
        code = run(loaded, host or settings.host, port or settings.port, count, **extra)
    finally:
        if pid_file:
            Path(pid_file).unlink(missing_ok=True)
    sys.exit(code)


def _workers(value: str) -> int:
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise click.BadParameter(
            f"expected 1..256 or 'auto'; got {value!r}", param_hint="--workers"
        )
    return count


@gateway.command("reload")
@click.option(
    "--pid-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The PID file `kt gateway run --pid-file` wrote.",
)
def gateway_reload(pid_file: str) -> None:
    """Make a running gateway re-read its config (SIGHUP); a bad config is refused and
    logged by the gateway, which keeps the old one."""
    import signal

    try:
        pid = int(Path(pid_file).read_text(encoding="utf-8").strip())
        os.kill(pid, signal.SIGHUP)
    except (ValueError, ProcessLookupError, PermissionError) as exc:
        click.echo(f"{pid_file}: cannot signal the gateway: {exc}", err=True)
        sys.exit(1)
    click.echo(f"reload requested (SIGHUP to {pid})")


# -- kt audit ------------------------------------------------------------------------------

_CONFIG_OPTION = click.option(
    "--policy-config",
    "-c",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Policy config whose audit-logger store to read.",
)


def _audit_options(path: str) -> AuditOptions | None:
    """The audit-logger options of the config at `path` (None without one); a config
    with errors ends the command with them."""
    from ktproxy.audit.store import audit_options
    from ktproxy.configcheck import ConfigError

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    return audit_options(loaded)


def _audit_sinks(path: str) -> list[Any]:
    from ktproxy.audit.store import open_sinks

    options = _audit_options(path)
    if options is None:
        click.echo(f"{path}: audit-logger is not in any policy chain; no audit store", err=True)
        sys.exit(1)
    try:
        return open_sinks(options)
    except (OSError, RuntimeError) as exc:  # PostgreSQL unreachable, schema not migrated
        click.echo(f"{path}: cannot open the audit store: {exc}", err=True)
        sys.exit(1)


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from ktproxy.audit.store import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_FILTERS = [
    click.option(
        "--since",
        callback=_time,
        help="From this time: epoch seconds, ISO 8601 or an age (15m, 2h, 7d).",
    ),
    click.option("--until", callback=_time, help="Before this time (same forms)."),
    click.option("--consumer", help="Consumer group."),
    click.option("--model", help="Requested or upstream model."),
    click.option("--target", help="Target id."),
    click.option("--status", type=int, help="HTTP status."),
    click.option("--decision", help="blocked, redacted, none, a policy name or a decision code."),
    click.option("--streamed/--not-streamed", default=None, help="Streamed or not."),
    click.option("--request-id", help="One request."),
]


def _filters(fn: Any) -> Any:
    for option in reversed(_FILTERS):
        fn = option(fn)
    return fn


def _print_records(records: list[Any], fmt: str, header: bool) -> None:
    import msgspec

    from ktproxy.audit.store import record_summary

    if fmt == "jsonl":
        for r in records:
            click.echo(msgspec.json.encode(r).decode())
        return
    rows = [record_summary(r) for r in records]
    columns = ["time", "id", "consumer", "model", "status", "stream", "ms", "tokens", "decisions"]
    widths = {c: max([len(c)] + [len(str(row[c])) for row in rows]) for c in columns}
    if header:
        click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


@main.group()
def audit() -> None:
    """Read, verify and purge the audit store of a policy config."""


@audit.command("query")
@_CONFIG_OPTION
@_filters
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True
)
def audit_query(path: str, limit: int, fmt: str, **filters: Any) -> None:
    """Print audit records, newest first."""
    from ktproxy.audit.sink import Query
    from ktproxy.audit.store import query_sinks

    sinks = _audit_sinks(path)
    page = query_sinks(sinks, Query(limit=limit, **filters)) if sinks else None
    _print_records(page.records if page else [], fmt, header=True)


@audit.command("tail")
@_CONFIG_OPTION
@_filters
@click.option(
    "--interval",
    type=click.FloatRange(0.05, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(0, 10_000),
    default=10,
    show_default=True,
    help="Records shown at start.",
)
@click.option(
    "--count", type=click.IntRange(1), default=None, help="Stop after this many new records."
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True
)
def audit_tail(
    path: str, interval: float, lines: int, count: int | None, fmt: str, **filters: Any
) -> None:
    """Follow new audit records as they are written (Ctrl-C stops)."""
    import time

    from ktproxy.audit.sink import Query
    from ktproxy.audit.store import query_sinks

    def fetch(since: float | None, limit: int) -> list[Any]:
        sinks = _audit_sinks(path)
        try:
            q = Query(
                limit=limit,
                **{**filters, "since": since if since is not None else filters["since"]},
            )
            return query_sinks(sinks, q).records if sinks else []
        finally:
            for s in sinks:
                s.close()

    # Records are stamped with their start time and written at their end, so each poll
    # looks back a while and skips what it has seen.
    lookback = 600.0
    started = time.time()
    seen = {(r.chain, r.seq) for r in fetch(started - lookback, 100_000)}
    recent = list(reversed(fetch(None, lines))) if lines else []
    seen.update((r.chain, r.seq) for r in recent)
    _print_records(recent, fmt, header=True)
    newest = max([started, *(r.ts for r in recent)])
    shown = 0
    try:
        while count is None or shown < count:
            time.sleep(interval)
            fresh = [
                r
                for r in reversed(fetch(newest - lookback, 100_000))
                if (r.chain, r.seq) not in seen
            ]
            seen.update((r.chain, r.seq) for r in fresh)
            if count is not None:
                fresh = fresh[: count - shown]
            _print_records(fresh, fmt, header=False)
            shown += len(fresh)
            newest = max([newest, *(r.ts for r in fresh)])
    except KeyboardInterrupt:
        pass


@audit.command("verify")
@_CONFIG_OPTION
def audit_verify(path: str) -> None:
    """Check every hash chain of the store; exit 1 on any edited or missing record."""
    sinks = _audit_sinks(path)
    broken = 0
    total = 0
    for sink in sinks:
        for problem in sink.verify():
            broken += 1
            click.echo(f"chain {problem.chain} record {problem.seq}: {problem.problem}")
        for chain, head in sink.chains().items():
            total += 1
            click.echo(f"chain {chain}: {head.seq} records, head {head.hash}")
        sink.close()
    if broken:
        click.echo(f"{path}: {broken} problem(s) in the audit store", err=True)
        sys.exit(1)
    click.echo(f"{path}: OK ({total} chain(s) verified)")


@audit.command("migrate")
@_CONFIG_OPTION
def audit_migrate(path: str) -> None:
    """Create or upgrade the audit schema in PostgreSQL (sink: postgres); idempotent."""
    import asyncio
    import os

    options = _audit_options(path)
    if options is None or options.sink != "postgres" or options.postgres is None:
        sink = options.sink if options else "none"
        click.echo(f"{path}: audit sink is {sink}; it creates its own files, nothing to migrate")
        return
    from ktproxy.audit.postgres_sink import migrate

    pg = options.postgres
    dsn = os.environ.get(pg.dsn_ref.env)
    if not dsn:
        click.echo(f"{path}: environment variable {pg.dsn_ref.env} is not set", err=True)
        sys.exit(1)
    try:
        before, after = asyncio.run(migrate(dsn, pg.schema))
    except Exception as exc:  # unreachable, refused, a newer schema: say it, exit 1
        click.echo(f"{path}: audit migration failed: {exc}", err=True)
        sys.exit(1)
    if before == after:
        click.echo(f"audit schema {pg.schema}: already at version {after}")
    else:
        click.echo(f"audit schema {pg.schema}: migrated from version {before} to {after}")


@audit.command("purge")
@_CONFIG_OPTION
@click.option(
    "--days",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Keep this many days [config retention_days].",
)
def audit_purge(path: str, days: float | None) -> None:
    """Delete records older than the retention period (what is kept still verifies)."""
    import time

    from ktproxy.audit.store import audit_options

    loaded = load_config(path)
    options = audit_options(loaded)
    keep = days if days is not None else (options.retention_days if options else None)
    if keep is None:
        click.echo("no retention_days in the config and no --days given; nothing purged", err=True)
        sys.exit(1)
    removed = 0
    for sink in _audit_sinks(path):
        removed += sink.purge(time.time() - keep * 86400)
        sink.close()
    click.echo(f"purged {removed} record(s) older than {keep:g} day(s)")
