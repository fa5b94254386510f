"""The default audit sink: one SQLite file in WAL mode, no server needed.

Each record is stored as the exact bytes that were hashed, next to the columns the
events API filters on (indexed). Several worker processes may share one file: each
writes its own chain, WAL lets readers run beside the writer, and a busy timeout
covers the short write locks. Retention deletes a prefix of each chain and keeps the
hash of its last deleted record as the chain's anchor, so what is left still verifies.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem, decode, verify_chain
from ktproxy.audit.sink import Page, Query, decision_summary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    consumer TEXT,
    model TEXT NOT NULL,
    upstream_model TEXT,
    target TEXT,
    status INTEGER,
    streamed INTEGER NOT NULL,
    summary TEXT NOT NULL,
    codes TEXT NOT NULL,
    record BLOB NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX IF NOT EXISTS audit_events_ts ON audit_events (ts, chain, seq);
CREATE INDEX IF NOT EXISTS audit_events_consumer ON audit_events (consumer, ts);
CREATE INDEX IF NOT EXISTS audit_events_model ON audit_events (model, ts);
CREATE INDEX IF NOT EXISTS audit_events_status ON audit_events (status, ts);
CREATE INDEX IF NOT EXISTS audit_events_summary ON audit_events (summary, ts);
CREATE INDEX IF NOT EXISTS audit_events_id ON audit_events (id);
CREATE TABLE IF NOT EXISTS audit_anchors (
    chain TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""


def _codes(record: AuditRecord) -> str:
    """Policy names and decision codes, space-delimited on both sides for LIKE."""
    words = {d.policy for d in record.decisions} | {d.code for d in record.decisions if d.code}
    return " " + " ".join(sorted(words)) + " "


def _row(record: AuditRecord, data: bytes) -> tuple[object, ...]:
    return (
        record.chain,
        record.seq,
        record.id,
        record.ts,
        record.consumer,
        record.model,
        record.upstream_model,
        record.target,
        record.status,
        int(record.streamed),
        decision_summary(record),
        _codes(record),
        data,
        record.hash,
    )


def encode_cursor(ts: float, chain: str, seq: int) -> str:
    """An opaque page cursor: the sort key of the last record of a page."""
    return base64.urlsafe_b64encode(f"{ts!r}\n{chain}\n{seq}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str, int]:
    """The sort key in a cursor; ValueError when it is not one of ours."""
    try:
        ts, chain, seq = base64.urlsafe_b64decode(cursor.encode()).decode().split("\n")
        return float(ts), chain, int(seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


class SQLiteSink:
    """Audit records in one SQLite database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def open(self) -> None:
        if self._db is not None:
            return
        if self.path.parent != Path(""):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def head(self, chain: str) -> ChainHead:
        with self._lock:
            db = self._conn()
            row = db.execute(
                "SELECT seq, hash FROM audit_events WHERE chain = ? ORDER BY seq DESC LIMIT 1",
                (chain,),
            ).fetchone()
            if row is None:
                row = db.execute(
                    "SELECT seq, hash FROM audit_anchors WHERE chain = ?", (chain,)
                ).fetchone()
        return ChainHead(row[0], row[1]) if row else ChainHead()

    def write(self, rows: Sequence[tuple[AuditRecord, bytes]]) -> None:
        with self._lock:
            db = self._conn()
            with db:
                db.executemany(
                    "INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [_row(r, data) for r, data in rows],
                )

    def query(self, query: Query) -> Page:
        where: list[str] = []
        args: list[object] = []
        for column, value in (
            ("consumer", query.consumer),
            ("target", query.target),
            ("status", query.status),
            ("id", query.request_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.model is not None:
            where.append("(model = ? OR upstream_model = ?)")
            args += [query.model, query.model]
        if query.streamed is not None:
            where.append("streamed = ?")
            args.append(int(query.streamed))
        if query.since is not None:
            where.append("ts >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("ts < ?")
            args.append(query.until)
        if query.decision is not None:
            if query.decision in ("blocked", "redacted", "none"):
                where.append("summary = ?")
                args.append(query.decision)
            else:
                where.append("instr(codes, ?) > 0")
                args.append(f" {query.decision} ")
        if query.cursor is not None:
            where.append("(ts, chain, seq) < (?, ?, ?)")
            args += list(decode_cursor(query.cursor))
        sql = "SELECT record, ts, chain, seq FROM audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, chain DESC, seq DESC LIMIT ?"
        args.append(query.limit + 1)
        with self._lock:
            rows = self._conn().execute(sql, args).fetchall()
        page = Page([decode(r[0]) for r in rows[: query.limit]])
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            page.next_cursor = encode_cursor(last[1], last[2], last[3])
        return page

    def purge(self, before: float) -> int:
        removed = 0
        with self._lock:
            db = self._conn()
            with db:
                for (chain,) in db.execute("SELECT DISTINCT chain FROM audit_events").fetchall():
                    # Only a prefix of the chain goes, so what stays still links up.
                    row = db.execute(
                        "SELECT min(seq) FROM audit_events WHERE chain = ? AND ts >= ?",
                        (chain, before),
                    ).fetchone()
                    if row[0] is None:
                        row = db.execute(
                            "SELECT max(seq) + 1 FROM audit_events WHERE chain = ?", (chain,)
                        ).fetchone()
                    cut = int(row[0]) - 1
                    last = db.execute(
                        "SELECT seq, hash FROM audit_events WHERE chain = ? AND seq <= ? "
                        "ORDER BY seq DESC LIMIT 1",
                        (chain, cut),
                    ).fetchone()
                    if last is None:
                        continue
                    cur = db.execute(
                        "DELETE FROM audit_events WHERE chain = ? AND seq <= ?", (chain, cut)
                    )
                    removed += cur.rowcount
                    db.execute(
                        "INSERT INTO audit_anchors VALUES (?, ?, ?) ON CONFLICT(chain) "
                        "DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                        (chain, last[0], last[1]),
                    )
        return removed

    def chains(self) -> dict[str, ChainHead]:
        with self._lock:
            db = self._conn()
            rows = db.execute("SELECT chain, max(seq) FROM audit_events GROUP BY chain").fetchall()
            out = {}
            for chain, seq in rows:
                (digest,) = db.execute(
                    "SELECT hash FROM audit_events WHERE chain = ? AND seq = ?", (chain, seq)
                ).fetchone()
                out[chain] = ChainHead(seq, digest)
        return out

    def verify(self) -> Iterator[ChainProblem]:
        with self._lock:
            db = self._conn()
            chains = [c for (c,) in db.execute("SELECT DISTINCT chain FROM audit_events")]
            anchors = {
                c: ChainHead(s, h)
                for c, s, h in db.execute("SELECT chain, seq, hash FROM audit_anchors")
            }
            found: list[ChainProblem] = []
            for chain in chains:
                rows = db.execute(
                    "SELECT record, id, ts, consumer, model, target, status, summary, hash "
                    "FROM audit_events WHERE chain = ? ORDER BY seq",
                    (chain,),
                ).fetchall()
                found += verify_chain(chain, (r[0] for r in rows), anchors.get(chain))
                found += self._columns_agree(chain, rows)
        yield from found

    @staticmethod
    def _columns_agree(chain: str, rows: list[tuple[object, ...]]) -> Iterator[ChainProblem]:
        """The indexed columns say what the hashed record says (else queries lie)."""
        for data, ident, ts, consumer, model, target, status, summary, digest in rows:
            try:
                r = decode(data)  # type: ignore[arg-type]
            except ValueError:
                continue  # reported by verify_chain
            if (ident, ts, consumer, model, target, status, summary, digest) != (
                r.id,
                r.ts,
                r.consumer,
                r.model,
                r.target,
                r.status,
                decision_summary(r),
                r.hash,
            ):
                yield ChainProblem(chain, r.seq, "indexed columns differ from the record")
