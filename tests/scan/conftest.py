"""Both scanner implementations: every test taking `scanner` runs once per implementation.

`c` is the extension `ktproxy._ktscan`, `py` the pure-Python reference. When the
extension is not importable, `c` is skipped, except under `CI=true`, where it fails:
CI must prove that the extension was built and loads.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest

with warnings.catch_warnings():
    # Without the extension, importing ktproxy.scan warns (RuntimeWarning) that it
    # falls back to the reference; the `c` parameter below says so instead.
    warnings.simplefilter("ignore", RuntimeWarning)
    from ktproxy.scan import reference

ScanFn = Callable[[str, int, bool, int], tuple[list[tuple[int, int, int]], int]]

IN_CI = os.environ.get("CI") == "true"


@dataclass(frozen=True)
class Scanner:
    """One implementation: `name` is its test id, `scan` the function under test."""

    name: str
    scan: ScanFn


def load_c_scan() -> ScanFn | str:
    """The extension's scan function, or why it cannot be imported."""
    try:
        module = importlib.import_module("ktproxy._ktscan")
    except ImportError as exc:
        return (
            f"ktproxy._ktscan is not importable ({exc}); build it with "
            "`python setup.py build_ext --inplace`"
        )
    scan: ScanFn = module.scan
    return scan


C_SCAN = load_c_scan()


def _c_param() -> object:
    if isinstance(C_SCAN, str):
        marks = [] if IN_CI else [pytest.mark.skip(reason=C_SCAN)]
        return pytest.param(C_SCAN, id="c", marks=marks)
    return pytest.param(Scanner("c", C_SCAN), id="c")


def require_c() -> ScanFn:
    """The extension's scan; skips the test without it, fails it under CI=true."""
    if isinstance(C_SCAN, str):
        if IN_CI:
            pytest.fail(f"CI=true requires the C extension: {C_SCAN}")
        pytest.skip(C_SCAN)
    return C_SCAN


@pytest.fixture(params=[_c_param(), pytest.param(Scanner("py", reference.scan), id="py")])
def scanner(request: pytest.FixtureRequest) -> Scanner:
    """Each implementation of `scan(text, mask, final, start)` in turn."""
    param = request.param
    if isinstance(param, str):  # the extension is missing and CI=true
        pytest.fail(f"CI=true requires the C extension: {param}")
    assert isinstance(param, Scanner)
    return param


@pytest.fixture(scope="session")
def c_scan() -> ScanFn:
    """The extension's scan function (session-scoped, so hypothesis tests can use it)."""
    return require_c()
