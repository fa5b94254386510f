"""The default audit sink: one SQLite file in WAL mode, no server needed.

Each record is stored as the exact bytes that were hashed, next to the columns the
events API filters on (indexed). Several worker processes may share one file: each
writes its own chain, WAL lets readers run beside the writer, and a busy timeout
covers the short write locks. Retention deletes a prefix of each chain and keeps the
hash of its last deleted record as the chain's anchor, so what is left still verifies.

Stats (`ktproxy.audit.stats`) are grouped inside SQLite over one covering index, from
columns derived from the record (latency and its bin, tokens, the blocking policy,
failed). A file written before they existed is migrated in place when opened (columns
added and filled from the stored records); `verify` checks them like the others.
"""

from __future__ import annotations

import base64
import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem, decode, verify_chain
from ktproxy.audit.sink import Page, Query, decision_summary, id_search
from ktproxy.audit.stats import (
    Tally,
    blocked_by,
    bucket_count,
    bucket_start,
    is_error,
    latency_bin,
    record_tokens,
)

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
    latency_ms REAL,
    lat_bin INTEGER,
    tokens INTEGER NOT NULL DEFAULT 0,
    blocked_by TEXT,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX IF NOT EXISTS audit_events_consumer ON audit_events (consumer, ts);
CREATE INDEX IF NOT EXISTS audit_events_model ON audit_events (model, ts);
CREATE INDEX IF NOT EXISTS audit_events_status ON audit_events (status, ts);
CREATE INDEX IF NOT EXISTS audit_events_id ON audit_events (id);
CREATE TABLE IF NOT EXISTS audit_anchors (
    chain TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""

# Version 1 (`PRAGMA user_version`): the columns stats aggregate, and one index
# covering them and every filter, in page order. Pages, filters, the id search and
# stats then read only this index (the record itself only for the rows of a page),
# so none of them touches the table's large record blobs.
_STAT_COLUMNS = {
    "latency_ms": "REAL",
    "lat_bin": "INTEGER",
    "tokens": "INTEGER NOT NULL DEFAULT 0",
    "blocked_by": "TEXT",
    "failed": "INTEGER NOT NULL DEFAULT 0",
}
_INDEXES = (
    """CREATE INDEX IF NOT EXISTS audit_events_cover ON audit_events (
        ts, chain, seq, id, consumer, model, upstream_model, target, status, streamed,
        summary, failed, tokens, lat_bin, latency_ms, blocked_by)""",
    # Latency histograms without sorting rows: range counts per bin.
    "CREATE INDEX IF NOT EXISTS audit_events_lat_bin ON audit_events (lat_bin, ts, latency_ms)",
    # `decision=` pages, and the blocked rows stats group by consumer, model, policy.
    """CREATE INDEX IF NOT EXISTS audit_events_decision ON audit_events (
        summary, ts, consumer, model, blocked_by)""",
)
USER_VERSION = 1
_NO_CONSUMER = object()  # a row of stats that counts models only
_NO_MODEL = object()  # ... and one that counts consumers only
# The start of the bucket holding `ts`, by comparison: floor(ts / b) can round up to
# the next bucket when ts is a hair below its start (the same rule as `bucket_start`).
_BUCKET_SQL = "(CAST(ts / ? AS INTEGER) - (CAST(ts / ? AS INTEGER) * ? > ts))"


def _distinct(col: str) -> str:
    """Every non-null value of `col`, one index seek each (a loose index scan)."""
    return (
        f"SELECT min({col}) FROM audit_events INDEXED BY audit_events_{col} UNION ALL "
        f"SELECT (SELECT {col} FROM audit_events INDEXED BY audit_events_{col} "
        f"WHERE {col} > v ORDER BY {col} LIMIT 1) FROM vals WHERE v IS NOT NULL"
    )


def _per_value(col: str) -> str:
    """Rows of `col` in the window [?1, ?2), per value (NULL included)."""
    return (
        f"WITH RECURSIVE vals(v) AS ({_distinct(col)}) "
        f"SELECT v, (SELECT count(*) FROM audit_events INDEXED BY audit_events_{col} "
        f"WHERE {col} = vals.v AND ts >= ?1 AND ts < ?2) AS n FROM vals WHERE v IS NOT NULL "
        f"UNION ALL SELECT NULL, count(*) FROM audit_events INDEXED BY audit_events_{col} "
        f"WHERE {col} IS NULL AND ts >= ?1 AND ts < ?2"
    )


_CONSUMERS = _per_value("consumer")
_MODELS = _per_value("model")
# Per (bucket, latency bin): the count and smallest latency; ?1 since, ?2 the first
# bucket's start, ?3 bucket seconds, ?4 until.
_CELLS = f"""
WITH RECURSIVE vals(v) AS ({_distinct("lat_bin")}),
bk(b) AS (SELECT ?2 UNION ALL SELECT b + ?3 FROM bk WHERE b + ?3 < ?4),
cells(b, v, lo, hi) AS (
    SELECT b, v, max(b, ?1), min(b + ?3, ?4) FROM bk, vals WHERE v IS NOT NULL),
counted AS (
    SELECT b, v, lo, hi, (SELECT count(*) FROM audit_events INDEXED BY audit_events_lat_bin
        WHERE lat_bin = v AND ts >= lo AND ts < hi) AS n FROM cells)
SELECT b / ?3, v, n, (SELECT min(latency_ms) FROM audit_events
    INDEXED BY audit_events_lat_bin WHERE lat_bin = v AND ts >= lo AND ts < hi)
FROM counted WHERE n > 0
"""


def _count_bins(db: sqlite3.Connection) -> int:
    """How many latency bins hold records (cells of the per-bin plan per bucket)."""
    found = db.execute(
        f"WITH RECURSIVE vals(v) AS ({_distinct('lat_bin')}) "
        "SELECT count(*) FROM vals WHERE v IS NOT NULL"
    ).fetchone()
    return int(found[0])


_INSERT = (
    "INSERT INTO audit_events (chain, seq, id, ts, consumer, model, upstream_model, target, "
    "status, streamed, summary, codes, record, hash, latency_ms, lat_bin, tokens, blocked_by, "
    "failed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _codes(record: AuditRecord) -> str:
    """Policy names and decision codes, space-delimited on both sides for LIKE."""
    words = {d.policy for d in record.decisions} | {d.code for d in record.decisions if d.code}
    return " " + " ".join(sorted(words)) + " "


def stat_columns(record: AuditRecord) -> tuple[object, ...]:
    """latency_ms, lat_bin, tokens, blocked_by, failed: what stats aggregate."""
    latency = record.latency_ms
    return (
        latency,
        None if latency is None else latency_bin(latency),
        record_tokens(record),
        blocked_by(record),
        int(is_error(record)),
    )


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
        *stat_columns(record),
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
        if db.execute("PRAGMA user_version").fetchone()[0] < USER_VERSION:
            _migrate(db)
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
                db.executemany(_INSERT, [_row(r, data) for r, data in rows])

    def query(self, query: Query) -> Page:
        where, args = _where(query)
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

    def stats(self, query: Query, bucket_s: int) -> Tally:
        # No GROUP BY over every row of a wide window: SQLite groups by sorting, which
        # costs microseconds a row. Counts come from one range scan per time bucket;
        # without filters, latency histograms, names and blocks come from seeks into
        # narrow indexes (one range count per latency bin and bucket, per consumer,
        # per model), and only blocked rows are grouped.
        if query.since is None or query.until is None:
            raise ValueError("stats need a window")
        since, until = query.since, query.until
        where, args = _where(dataclasses.replace(query, since=None, until=None))
        extra = "".join(f" AND {w}" for w in where)
        tally = Tally()
        first = bucket_start(since, bucket_s)
        buckets = bucket_count(since, until, bucket_s)
        with self._lock:
            db = self._conn()
            rows = 0
            for i in range(buckets):
                start = first + i * bucket_s
                lo, hi = max(float(start), since), min(float(start + bucket_s), until)
                n, blocked, redacted, failed, streamed, tokens = db.execute(
                    "SELECT count(*), sum(summary = 'blocked'), sum(summary = 'redacted'), "
                    "sum(failed), sum(streamed), sum(tokens) FROM audit_events "
                    f"INDEXED BY audit_events_cover WHERE ts >= ? AND ts < ?{extra}",
                    [lo, hi, *args],
                ).fetchone()
                if n:
                    rows += n
                    b = tally.bucket(start)
                    b.requests, b.blocked, b.redacted = n, blocked, redacted
                    b.errors, b.streamed, b.tokens = failed, streamed, tokens
            if not rows:
                return tally
            window = [since, until]
            if where or rows < _count_bins(db) * buckets:
                # Filtered, or few rows: group the matching rows.
                latency = db.execute(
                    f"SELECT {_BUCKET_SQL} AS b, lat_bin, count(*), min(latency_ms) "
                    "FROM audit_events INDEXED BY audit_events_cover WHERE ts >= ? AND ts < ? "
                    f"AND lat_bin IS NOT NULL{extra} GROUP BY b, lat_bin",
                    [bucket_s, bucket_s, bucket_s, *window, *args],
                ).fetchall()
            else:  # one range count per (bucket, latency bin) in the narrow index
                latency = db.execute(_CELLS, [since, first, bucket_s, until]).fetchall()
            if where:
                names = db.execute(
                    "SELECT consumer, model, blocked_by, count(*), sum(summary = 'blocked') "
                    "FROM audit_events INDEXED BY audit_events_cover WHERE ts >= ? AND ts < ?"
                    f"{extra} GROUP BY consumer, model, blocked_by",
                    [*window, *args],
                ).fetchall()
            else:
                names = [(v, _NO_MODEL, None, n, 0) for v, n in db.execute(_CONSUMERS, window)]
                names += [(_NO_CONSUMER, v, None, n, 0) for v, n in db.execute(_MODELS, window)]
                names += db.execute(
                    "SELECT consumer, model, blocked_by, 0, count(*) FROM audit_events "
                    "INDEXED BY audit_events_decision WHERE summary = 'blocked' AND ts >= ? "
                    "AND ts < ? GROUP BY consumer, model, blocked_by",
                    window,
                ).fetchall()
        for b, lat_bin, n, smallest in latency:
            tally.bucket(int(b) * bucket_s).add_latency(lat_bin, n, smallest)
        for consumer, model, policy, n, blocked in names:
            if consumer is not _NO_CONSUMER and (n or blocked):
                tally.count("consumers", consumer, n, blocked)
            if model is not _NO_MODEL and (n or blocked):
                tally.count("models", model, n, blocked)
            if policy is not None:
                tally.policies[policy] = tally.policies.get(policy, 0) + blocked
        return tally

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
                    "SELECT record, id, ts, consumer, model, target, status, summary, hash, "
                    "latency_ms, lat_bin, tokens, blocked_by, failed "
                    "FROM audit_events WHERE chain = ? ORDER BY seq",
                    (chain,),
                ).fetchall()
                found += verify_chain(chain, (r[0] for r in rows), anchors.get(chain))
                found += self._columns_agree(chain, rows)
        yield from found

    @staticmethod
    def _columns_agree(
        chain: str,
        rows: list[tuple[object, ...]],
        stats: Callable[[AuditRecord], tuple[object, ...]] | None = None,
    ) -> Iterator[ChainProblem]:
        """The indexed columns say what the hashed record says (else queries lie).

        Each row is the stored record then `id, ts, consumer, model, target, status,
        summary, hash`, then the stat columns as `stats` (default: SQLite's) makes them."""
        for data, *columns in rows:
            try:
                r = decode(data)  # type: ignore[arg-type]
            except ValueError:
                continue  # reported by verify_chain
            expected: tuple[object, ...] = (
                r.id, r.ts, r.consumer, r.model, r.target, r.status, decision_summary(r), r.hash,
            )  # fmt: skip
            expected += (stats or stat_columns)(r)
            if tuple(columns) != expected:
                yield ChainProblem(chain, r.seq, "indexed columns differ from the record")


def _where(query: Query) -> tuple[list[str], list[object]]:
    """SQL conditions and arguments for the filters of `query` (not its cursor)."""
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
    if query.search is not None:
        exact, needle = id_search(query.search)
        if exact:
            where.append("id = ?")
            args.append(needle)
        elif needle.strip("0123456789abcdef"):
            where.append("0")  # ids are hex: nothing else can match
        else:
            where.append("instr(id, ?) > 0")
            args.append(needle)
    return where, args


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a file written by an older ktproxy to `USER_VERSION`, in place: add the
    stat columns, fill them from each stored record, build the covering index."""
    db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] < USER_VERSION:
            have = {row[1] for row in db.execute("PRAGMA table_info(audit_events)")}
            missing = [c for c in _STAT_COLUMNS if c not in have]
            for column in missing:
                db.execute(f"ALTER TABLE audit_events ADD COLUMN {column} {_STAT_COLUMNS[column]}")
            if missing:
                after = -1
                while batch := db.execute(
                    "SELECT rowid, record FROM audit_events WHERE rowid > ? ORDER BY rowid "
                    "LIMIT 5000",
                    (after,),
                ).fetchall():
                    after = batch[-1][0]
                    db.executemany(
                        "UPDATE audit_events SET latency_ms = ?, lat_bin = ?, tokens = ?, "
                        "blocked_by = ?, failed = ? WHERE rowid = ?",
                        [(*_stat_columns_of(data), rowid) for rowid, data in batch],
                    )
            db.execute("DROP INDEX IF EXISTS audit_events_ts")  # the covering index leads
            db.execute("DROP INDEX IF EXISTS audit_events_summary")  # widened below
            for sql in _INDEXES:
                db.execute(sql)
            db.execute(f"PRAGMA user_version = {USER_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _stat_columns_of(data: bytes) -> tuple[object, ...]:
    try:
        return stat_columns(decode(data))
    except ValueError:  # an unreadable record: verify reports it; stats skip its values
        return (None, None, 0, None, 0)
