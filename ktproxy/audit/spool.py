"""A bounded local spool: audit records kept on disk while their sink is unreachable.

One JSON line per sealed record, prefixed with its partition time (`<pts>\\t<record>`),
appended and fsynced per batch, so a crash loses nothing that was acknowledged. The
file is bounded by bytes: a batch that does not fit is dropped and counted (as the
writer's queue does), and the chain then shows the gap. The owning process holds an
exclusive `flock` on the file for its life, so a spool whose lock can be taken belongs
to a process that is gone and may be adopted (replayed) by another.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path


class SpoolBusy(OSError):
    """Another live process holds the spool file."""


class Spool:
    """An append-only file of `(pts, stored record bytes)`, bounded by `max_bytes`."""

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.size = 0
        self.records = 0
        self.dropped = 0
        self._fd: int | None = None

    def open(self) -> None:
        """Open (create) and lock the file; `SpoolBusy` when another process has it."""
        if self._fd is not None:
            return
        if self.path.parent != Path(""):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"{self.path}: spool is in use by another process") from None
        self._fd = fd
        self.size = os.fstat(fd).st_size
        self.records = sum(1 for _ in self.entries())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def append(self, entries: Sequence[tuple[float, bytes]]) -> bool:
        """Append `entries` durably; False (and counted as dropped) when they do not fit."""
        self.open()
        assert self._fd is not None
        data = b"".join(b"%r\t%s\n" % (pts, body) for pts, body in entries)
        if self.size + len(data) > self.max_bytes:
            self.dropped += len(entries)
            return False
        os.write(self._fd, data)
        os.fsync(self._fd)
        self.size += len(data)
        self.records += len(entries)
        return True

    def entries(self) -> Iterator[tuple[float, bytes]]:
        """What the spool holds, oldest first (a torn last line is skipped)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a write cut short by a crash: never acknowledged
                pts, _, body = line.rstrip(b"\n").partition(b"\t")
                yield float(pts), body

    def clear(self) -> None:
        """Empty the spool (everything in it is safely elsewhere)."""
        self.open()
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.size = 0
        self.records = 0

    def remove(self) -> None:
        """Delete the file and release it (an adopted spool, replayed)."""
        self.path.unlink(missing_ok=True)
        self.close()
