"""The `kt` command line: thin parsing around functions that do the work.

Every option can also come from the environment with the `KT_` prefix, the command
path and the option's name (`KT_GATEWAY_RUN_PORT=8080`,
`KT_GATEWAY_RUN_POLICY_CONFIG=policy-config.yaml`, `KT_POLICY_LINT_FILE=...`).
"""

from __future__ import annotations

import logging
import sys

import click

from ktproxy import __version__
from ktproxy.configcheck import check_file, load_config


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
def gateway_run(path: str, host: str | None, port: int | None, log_level: str | None) -> None:
    """Start the gateway on a policy config (refuses a config that fails lint)."""
    from ktproxy.configcheck import ConfigError
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
    level = (log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run(loaded, host or settings.host, port or settings.port))
