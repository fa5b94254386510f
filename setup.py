"""Build of the optional C extension `ktproxy._ktscan` (the scan hot path).

Metadata lives in pyproject.toml; this file only decides about the extension:
- built from `ext/*.c` when sources are present;
- `KTPROXY_NO_EXTENSIONS=1` skips it (the pure-Python reference is used);
- `KTPROXY_DEBUG_BUILD=1` builds with `-O0 -g3`, `KTPROXY_SANITIZE=1` adds ASan/UBSan;
- a failed build falls back to pure Python with a loud banner, except under
  `CI=true`, where it fails the install so a silent fallback can never pass CI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / "ext").glob("*.c"))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _extensions() -> list[Extension]:
    if _flag("KTPROXY_NO_EXTENSIONS") or not SOURCES:
        return []
    compile_args = ["-Wall", "-Wextra", "-std=c11"]
    link_args: list[str] = []
    if _flag("KTPROXY_DEBUG_BUILD"):
        compile_args += ["-O0", "-g3", "-UNDEBUG"]
    else:
        compile_args += ["-O3"]
    if _flag("KTPROXY_SANITIZE"):
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += sanitize
        link_args += sanitize
    return [
        Extension(
            "ktproxy._ktscan",
            sources=SOURCES,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]


class OptionalBuildExt(build_ext):
    """Falls back to pure Python when the compiler fails, unless running in CI."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        if _flag("CI"):
            raise
        banner = "*" * 75
        print(
            f"\n{banner}\nWARNING: the C extension ktproxy._ktscan could not be built:\n"
            f"  {exc}\nktproxy will use its pure-Python scanner (slower hot path).\n{banner}\n",
            file=sys.stderr,
        )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
