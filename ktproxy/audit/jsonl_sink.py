"""Audit records as JSON lines, rotated by size, for log shippers.

One record per line, exactly the bytes that were hashed. When the live file passes
`max_bytes` it is renamed with a sortable timestamp suffix and a new one is started;
`keep_files` bounds how many rotated files stay. Retention deletes whole rotated
files whose every record is older than the cut-off, oldest first, and remembers
where each chain stood in a small anchors file, so `verify` still works on the rest.
One writer per file: with several workers, put `{instance}` in the path.
"""

from __future__ import annotations

import calendar
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem, decode, verify_chain
from ktproxy.audit.sink import Page, Query, matches
from ktproxy.audit.sqlite_sink import decode_cursor, encode_cursor
from ktproxy.audit.stats import Tally, tally_records

_STAMP = re.compile(r"\.(\d{8}T\d{6})\.(\d{6})\.rotated$")


class JSONLSink:
    """Audit records in a rotated JSON-lines file."""

    def __init__(self, path: str | Path, max_bytes: int = 64 << 20, keep_files: int = 100):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self._lock = threading.Lock()

    @property
    def _anchors_path(self) -> Path:
        return self.path.with_name(self.path.name + ".anchors.json")

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass  # every write opens, appends and closes: nothing is held

    def _files(self) -> list[Path]:
        """Rotated files oldest first, then the live file."""
        rotated = sorted(self.path.parent.glob(self.path.name + ".*.rotated"))
        return rotated + ([self.path] if self.path.exists() else [])

    def _lines(self, path: Path) -> list[bytes]:
        with open(path, "rb") as f:
            return [line for line in f.read().split(b"\n") if line.strip()]

    def _anchors(self) -> dict[str, ChainHead]:
        try:
            raw = orjson.loads(self._anchors_path.read_bytes())
        except FileNotFoundError:
            return {}
        return {c: ChainHead(int(v["seq"]), str(v["hash"])) for c, v in raw.items()}

    def head(self, chain: str) -> ChainHead:
        with self._lock:
            for path in reversed(self._files()):
                for data in reversed(self._lines(path)):
                    record = decode(data)
                    if record.chain == chain:
                        return ChainHead(record.seq, record.hash)
            return self._anchors().get(chain, ChainHead())

    def write(self, rows: Sequence[tuple[AuditRecord, bytes]]) -> None:
        payload = b"".join(data + b"\n" for _, data in rows)
        with self._lock:
            with open(self.path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            if size >= self.max_bytes:
                self._rotate()

    def _rotated_name(self, micros: int) -> str:
        """`<name>.<UTC YYYYmmddTHHMMSS.ffffff>.rotated`: names sort in write order."""
        seconds, fraction = divmod(micros, 1_000_000)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{fraction:06d}"
        return f"{self.path.name}.{stamp}.rotated"

    def _rotate(self) -> None:
        # One clock reading for the whole stamp (seconds and fraction from two readings
        # could straddle a second and sort before the previous file), and never a name
        # that sorts before an existing one (a clock stepped back).
        existing = self._files()[:-1] if self.path.exists() else self._files()
        micros = int(time.time() * 1_000_000)
        if existing:
            match = _STAMP.search(existing[-1].name)
            if match:
                when = calendar.timegm(time.strptime(match[1], "%Y%m%dT%H%M%S"))
                micros = max(micros, when * 1_000_000 + int(match[2]) + 1)
        self.path.rename(self.path.with_name(self._rotated_name(micros)))
        rotated = self._files()[:-1] if self.path.exists() else self._files()
        for old in rotated[: max(0, len(rotated) - self.keep_files)]:
            self._drop_file(old)

    def _drop_file(self, path: Path) -> int:
        """Delete one file (oldest first only), moving each chain's anchor past it."""
        anchors = self._anchors()
        lines = self._lines(path)
        for data in lines:
            record = decode(data)
            anchors[record.chain] = ChainHead(record.seq, record.hash)
        tmp = self._anchors_path.with_suffix(".tmp")
        tmp.write_bytes(
            orjson.dumps({c: {"seq": h.seq, "hash": h.hash} for c, h in anchors.items()})
        )
        tmp.replace(self._anchors_path)
        path.unlink()
        return len(lines)

    def purge(self, before: float) -> int:
        removed = 0
        with self._lock:
            for path in self._files():
                if path == self.path:
                    break  # the live file is never deleted
                if any(decode(d).ts >= before for d in self._lines(path)):
                    break  # only a prefix goes, so the rest still links up
                removed += self._drop_file(path)
        return removed

    def _records_newest_first(self) -> Iterator[AuditRecord]:
        for path in reversed(self._files()):
            for data in reversed(self._lines(path)):
                yield decode(data)

    def query(self, query: Query) -> Page:
        after = decode_cursor(query.cursor) if query.cursor else None
        with self._lock:
            found = [
                r
                for r in self._records_newest_first()
                if matches(r, query) and (after is None or (r.ts, r.chain, r.seq) < after)
            ]
        found.sort(key=lambda r: (r.ts, r.chain, r.seq), reverse=True)
        page = Page(found[: query.limit])
        if len(found) > query.limit:
            last = found[query.limit - 1]
            page.next_cursor = encode_cursor(last.ts, last.chain, last.seq)
        return page

    def stats(self, query: Query, bucket_s: int) -> Tally:
        # A JSON-lines file has no index: every record is read, as for `query`.
        with self._lock:
            found = [r for r in self._records_newest_first() if matches(r, query)]
        return tally_records(found, bucket_s)

    def chains(self) -> dict[str, ChainHead]:
        out: dict[str, ChainHead] = {}
        with self._lock:
            for path in self._files():
                for data in self._lines(path):
                    r = decode(data)
                    out[r.chain] = ChainHead(r.seq, r.hash)
        return out

    def verify(self) -> Iterator[ChainProblem]:
        with self._lock:
            by_chain: dict[str, list[bytes]] = {}
            problems: list[ChainProblem] = []
            for path in self._files():
                for n, data in enumerate(self._lines(path), 1):
                    try:
                        chain = decode(data).chain
                    except ValueError:
                        problems.append(ChainProblem("?", 0, f"{path.name}:{n}: unreadable"))
                        continue
                    by_chain.setdefault(chain, []).append(data)
            anchors = self._anchors()
            for chain, stored in by_chain.items():
                problems += verify_chain(chain, stored, anchors.get(chain))
        yield from problems
