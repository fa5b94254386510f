"""The fleet backends' tests run against real Redis and PostgreSQL servers.

`.ci/run` sets `KT_TEST_REDIS_URL` and `KT_TEST_POSTGRES_DSN` to the machine's
services. Under `CI=true` a missing variable or an unreachable server fails the test;
elsewhere the test is skipped with a message saying how to run it.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

HOW = "set {var} (e.g. {example}) to run the fleet tests against a real server; .ci/run sets it"


def _service(var: str, example: str) -> str:
    url = os.environ.get(var)
    problem = None
    if not url:
        problem = f"{var} is not set"
    else:
        parts = urlsplit(url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 3):
                pass
        except OSError as exc:
            problem = f"{var}={url} is unreachable ({exc})"
    if problem is not None:
        message = f"{problem}; {HOW.format(var=var, example=example)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert url is not None
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis server for the tests (its database is theirs to flush)."""
    return _service("KT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """A PostgreSQL database for the tests (they create and drop their own schemas)."""
    return _service("KT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
