"""Fail unless `ktproxy._ktscan` is imported from the given (sanitizer) build directory.

An editable install or the current directory can shadow `PYTHONPATH`; a fuzz run
against the optimised build would find nothing and look clean.

    python fuzz/check_build.py build/fuzz-asan
"""

from __future__ import annotations

import sys
from pathlib import Path

from ktproxy import _ktscan

if __name__ == "__main__":
    where = Path(_ktscan.__file__).resolve()
    build = Path(sys.argv[1]).resolve()
    if build not in where.parents:
        sys.exit(f"ktproxy._ktscan comes from {where}, not from the build in {build}")
    print(f"fuzzing {where}")
