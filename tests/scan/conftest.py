"""Both scanner implementations: every test taking `scanner` runs once per implementation.

`c` is the extension `ktproxy._ktscan`, `py` the pure-Python reference. When the
extension is not importable, `c` is skipped, except under `CI=true`, where it fails:
CI must prove that the extension was built and loads.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

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


T = TypeVar("T")


def load_extension() -> ModuleType | str:
    """The extension module, or why it cannot be imported."""
    try:
        return importlib.import_module("ktproxy._ktscan")
    except ImportError as exc:
        return (
            f"ktproxy._ktscan is not importable ({exc}); build it with "
            "`python setup.py build_ext --inplace`"
        )


def c_param(impl: object) -> object:
    """The `c` parameter: `impl`, or (as a str) why it is missing, then skipped
    outside CI and left for `chosen` to fail under CI."""
    if isinstance(impl, str):
        marks = [] if IN_CI else [pytest.mark.skip(reason=impl)]
        return pytest.param(impl, id="c", marks=marks)
    return pytest.param(impl, id="c")


def chosen(param: T | str) -> T:
    """A fixture parameter from `c_param`: the implementation, or a CI failure."""
    if isinstance(param, str):  # the extension is missing and CI=true
        pytest.fail(f"CI=true requires the C extension: {param}")
    return param


def require(impl: T | str) -> T:
    """`impl`, else skip the test (outside CI) or fail it (under CI=true)."""
    if isinstance(impl, str):
        if IN_CI:
            pytest.fail(f"CI=true requires the C extension: {impl}")
        pytest.skip(impl)
    return impl


def rss_growth_mb(script: str) -> float:
    """Run a leak-check script in its own process; it prints its RSS growth in MB."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    return float(out.stdout.strip())


EXTENSION = load_extension()
C_SCAN: ScanFn | str = EXTENSION if isinstance(EXTENSION, str) else EXTENSION.scan


def require_c() -> ScanFn:
    """The extension's scan; skips the test without it, fails it under CI=true."""
    return require(C_SCAN)


_C_SCANNER = C_SCAN if isinstance(C_SCAN, str) else Scanner("c", C_SCAN)


@pytest.fixture(params=[c_param(_C_SCANNER), pytest.param(Scanner("py", reference.scan), id="py")])
def scanner(request: pytest.FixtureRequest) -> Scanner:
    """Each implementation of `scan(text, mask, final, start)` in turn."""
    impl: Scanner = chosen(request.param)
    return impl


@pytest.fixture(scope="session")
def c_scan() -> ScanFn:
    """The extension's scan function (session-scoped, so hypothesis tests can use it)."""
    return require_c()
