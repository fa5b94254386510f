"""The scan hot path: the C extension when it is built, else the pure-Python reference.

`KTPROXY_NO_EXTENSIONS=1` selects the reference. Outside CI a missing extension
falls back to it with a warning; under `CI=true` the guard test fails instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from ktproxy.scan import reference
from ktproxy.scan.kinds import ALL_KINDS, KIND_INDEX, KINDS, mask_of

ScanFn = Callable[[str, int, bool, int], tuple[list[tuple[int, int, int]], int]]

NO_EXTENSIONS = os.environ.get("KTPROXY_NO_EXTENSIONS", "").strip().lower() in {
    "1",
    "true",
    "yes",
    "on",
}

scan: ScanFn
IMPLEMENTATION: str

if TYPE_CHECKING:
    scan = reference.scan
    IMPLEMENTATION = "py"
elif NO_EXTENSIONS:
    scan = reference.scan
    IMPLEMENTATION = "py"
else:
    try:
        from ktproxy import _ktscan
    except ImportError:
        warnings.warn(
            "ktproxy._ktscan (the C scanner) is not built; using the pure-Python "
            "reference, which is much slower. Reinstall with a C compiler present.",
            RuntimeWarning,
            stacklevel=1,
        )
        scan = reference.scan
        IMPLEMENTATION = "py"
    else:
        scan = _ktscan.scan
        IMPLEMENTATION = "c"

__all__ = ["ALL_KINDS", "IMPLEMENTATION", "KINDS", "KIND_INDEX", "mask_of", "scan"]
