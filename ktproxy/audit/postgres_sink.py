"""The fleet audit sink: every gateway instance's hash chain in one PostgreSQL table.

Records go in with COPY, one batch per call, as the exact bytes that were hashed next
to the columns the events API filters on (indexed). The table is partitioned by day
on `pts`, the record's time made monotonic along its chain (`max(ts, pts of the
record before)`): a long stream that started before midnight may finish after
records that started later, and partitioning on raw `ts` would let retention cut a
chain in the middle. With `pts`, dropping every partition older than the cut-off
removes a prefix of each chain; the last dropped record of each chain becomes its
anchor (as in the SQLite sink), so what stays still verifies. Retention therefore
works in whole days.

The schema is versioned (`schema_version`) and created or upgraded by
`kt audit migrate`; a gateway does not run DDL beyond creating the next day's
partition, and refuses to start on a schema older (or newer) than it knows, saying
what to run. DDL rights can thus stay with the operator's role.

When PostgreSQL is unreachable, batches go to a bounded local spool file
(`ktproxy.audit.spool`) and the write succeeds; they are replayed, in order and
before any new record, as soon as PostgreSQL answers again (the writer polls
`backlog`). Replay is idempotent (`ON CONFLICT DO NOTHING` on the chain position),
so a crash mid-replay duplicates nothing. A spool left by a gateway that died is
adopted and replayed by the next one writing to the same spool directory.

A gateway also starts while PostgreSQL is away (only a sink with a spool: a reader
still fails): it spools from the first record, and the schema check it owes runs
before anything is inserted. A schema found at the wrong version then is logged as
an error and checked again every `RETRY_INTERVAL` seconds, the records staying in the
spool until `kt audit migrate` has run. Where the instance's chain stood is unknown
then, unless the spool holds its records: `head` raises `HeadUnknown` and the writer
starts a new chain (see `ktproxy.audit.writer`).

asyncpg is asynchronous and sinks are synchronous (called in worker threads), so the
sink runs its one connection on a private event loop in its own thread.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem, decode, verify_chain
from ktproxy.audit.sink import HeadUnknown, Page, Query, decision_summary, id_search
from ktproxy.audit.spool import Spool, SpoolBusy
from ktproxy.audit.sqlite_sink import SQLiteSink, decode_cursor, encode_cursor
from ktproxy.audit.stats import BIN_EDGES, Tally, blocked_by, is_error, record_tokens

log = logging.getLogger("ktproxy.audit")

SCHEMA_VERSION = 2
DAY = 86400
RETRY_INTERVAL = 1.0  # seconds between two connection attempts while unreachable
SCHEMA_LOG_INTERVAL = 60.0  # seconds between two "wrong schema, still spooling" errors
_T = TypeVar("_T")

# Errors that mean "PostgreSQL is not there right now": spool and retry later.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)

# Each entry upgrades the schema by one version; `{s}` is the quoted schema name.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.audit_events (
        chain text NOT NULL,
        seq bigint NOT NULL,
        pts double precision NOT NULL,
        id text NOT NULL,
        ts double precision NOT NULL,
        consumer text,
        model text NOT NULL,
        upstream_model text,
        target text,
        status integer,
        streamed boolean NOT NULL,
        summary text NOT NULL,
        codes text[] NOT NULL,
        record bytea NOT NULL,
        hash text NOT NULL,
        PRIMARY KEY (chain, seq, pts)
    ) PARTITION BY RANGE (pts);
    CREATE INDEX audit_events_ts ON {s}.audit_events (ts, chain, seq);
    CREATE INDEX audit_events_consumer ON {s}.audit_events (consumer, ts);
    CREATE INDEX audit_events_model ON {s}.audit_events (model, ts);
    CREATE INDEX audit_events_upstream_model ON {s}.audit_events (upstream_model, ts);
    CREATE INDEX audit_events_target ON {s}.audit_events (target, ts);
    CREATE INDEX audit_events_status ON {s}.audit_events (status, ts);
    CREATE INDEX audit_events_summary ON {s}.audit_events (summary, ts);
    CREATE INDEX audit_events_streamed ON {s}.audit_events (streamed, ts);
    CREATE INDEX audit_events_codes ON {s}.audit_events USING gin (codes);
    CREATE INDEX audit_events_id ON {s}.audit_events (id);
    CREATE TABLE {s}.audit_anchors (
        chain text PRIMARY KEY,
        seq bigint NOT NULL,
        hash text NOT NULL
    );
    """,
    # 2: what stats aggregate, as columns (filled from the stored records), so that
    # PostgreSQL groups them without parsing every record's JSON (~50 µs a row).
    """
    ALTER TABLE {s}.audit_events
        ADD COLUMN latency_ms double precision,
        ADD COLUMN tokens bigint NOT NULL DEFAULT 0,
        ADD COLUMN blocked_by text,
        ADD COLUMN failed boolean NOT NULL DEFAULT false;
    UPDATE {s}.audit_events SET (latency_ms, tokens, blocked_by, failed) = (
        SELECT (j->>'latency_ms')::float8,
            COALESCE((j->'usage'->>'total_tokens')::bigint,
                COALESCE((j->'usage'->>'prompt_tokens')::bigint, 0)
                + COALESCE((j->'usage'->>'completion_tokens')::bigint, 0)),
            (SELECT d->>'policy' FROM jsonb_array_elements(j->'decisions')
                WITH ORDINALITY AS e(d, n) WHERE d->>'action' = 'block' ORDER BY n LIMIT 1),
            CASE WHEN summary = 'blocked' THEN false
                WHEN status IS NOT NULL THEN status >= 400
                ELSE j->>'error' IS NOT NULL END
        FROM (SELECT convert_from(record, 'UTF8')::jsonb AS j) AS r);
    CREATE INDEX audit_events_stats ON {s}.audit_events (ts) INCLUDE (
        latency_ms, tokens, blocked_by, failed, summary, streamed, consumer, model);
    """,
)

COLUMNS = (
    "chain", "seq", "pts", "id", "ts", "consumer", "model", "upstream_model", "target",
    "status", "streamed", "summary", "codes", "record", "hash", "latency_ms", "tokens",
    "blocked_by", "failed",
)  # fmt: skip


class SchemaError(RuntimeError):
    """The database's audit schema is not the one this ktproxy knows."""


def _quote(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _lock_key(schema: str) -> str:
    return f"ktproxy-audit:{schema}"


def _codes(record: AuditRecord) -> list[str]:
    words = {d.policy for d in record.decisions} | {d.code for d in record.decisions if d.code}
    return sorted(words)


def _row(pts: float, record: AuditRecord, data: bytes) -> tuple[object, ...]:
    return (
        record.chain, record.seq, pts, record.id, record.ts, record.consumer, record.model,
        record.upstream_model, record.target, record.status, record.streamed,
        decision_summary(record), _codes(record), data, record.hash, *_stat_columns(record),
    )  # fmt: skip


def _stat_columns(record: AuditRecord) -> tuple[object, ...]:
    """latency_ms, tokens, blocked_by, failed (schema version 2)."""
    return record.latency_ms, record_tokens(record), blocked_by(record), is_error(record)


def partition_name(day_start: int) -> str:
    """`audit_events_pYYYYMMDD`, the partition holding the UTC day from `day_start`."""
    return "audit_events_p" + datetime.fromtimestamp(day_start, UTC).strftime("%Y%m%d")


def _partition_day(name: str) -> int | None:
    try:
        stamp = datetime.strptime(name.removeprefix("audit_events_p"), "%Y%m%d")
    except ValueError:
        return None
    return int(stamp.replace(tzinfo=UTC).timestamp())


async def schema_version(conn: Any, schema: str) -> int:
    """The version of the audit schema `schema` (0 when there is none)."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{_quote(schema)}.schema_version")
    if exists is None:
        return 0
    version = await conn.fetchval(f"SELECT max(version) FROM {_quote(schema)}.schema_version")
    return int(version or 0)


async def migrate(dsn: str, schema: str) -> tuple[int, int]:
    """Create or upgrade the audit schema; (version before, version after). Idempotent,
    and safe to run from several places at once (an advisory lock serialises it)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _lock_key(schema))
            before = await schema_version(conn, schema)
            if before > SCHEMA_VERSION:
                raise SchemaError(
                    f"audit schema {schema} is at version {before}, newer than this "
                    f"ktproxy knows ({SCHEMA_VERSION}); upgrade ktproxy"
                )
            s = _quote(schema)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[version - 1].format(s=s))
                await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", version)
        return before, SCHEMA_VERSION
    finally:
        await conn.close()


class _LoopThread:
    """A private event loop in a daemon thread, for calling asyncpg from sync code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class PostgresSink:
    """Audit records of every gateway instance in one partitioned PostgreSQL table."""

    def __init__(
        self,
        dsn: str | None,
        schema: str = "ktproxy",
        *,
        spool_path: str | Path | None = None,
        spool_max_bytes: int = 256 << 20,
        spool_pattern: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        dsn_source: str = "the DSN",
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.dsn_source = dsn_source
        self.spool = Spool(spool_path, spool_max_bytes) if spool_path is not None else None
        self.spool_pattern = spool_pattern  # a glob of other instances' spools to adopt
        self._s = _quote(schema)
        self._lock = threading.RLock()
        self._loop: _LoopThread | None = None
        self._conn: Any = None
        self._days: set[int] = set()  # partitions known to exist
        self._pts: dict[str, float] = {}  # per chain: pts of its last record
        self._down_until = 0.0
        self._orphans: list[Spool] | None = None  # None: not looked for yet
        self._schema_owed = False  # opened while unreachable: check before inserting
        self._next_schema_log = 0.0

    # -- connection ---------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            self._loop = _LoopThread(f"audit-postgres:{self.schema}")
        return self._loop.run(coro, self.connect_timeout + self.command_timeout + 5)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            if not self.dsn:
                raise SchemaError(f"audit-logger: {self.dsn_source} is not set")
            self._conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout
            )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run `coro`; on an unreachable server, forget the connection and re-raise."""
        try:
            return self._run(coro)
        except UNREACHABLE:
            self._run(self._drop_connection())
            self._down_until = time.monotonic() + RETRY_INTERVAL
            raise
        except asyncpg.PostgresError:
            self._days.clear()  # e.g. a partition dropped by another instance's retention
            raise

    def open(self) -> None:
        """Check the schema version. With a spool, an unreachable server is no reason
        to refuse: the check is owed and runs before the first insert."""
        with self._lock:
            try:
                self._call(self._open())
            except UNREACHABLE as exc:
                if self.spool is None:
                    raise
                self._schema_owed = True
                log.warning(
                    "audit PostgreSQL unreachable at start (%s): starting on the spool %s; "
                    "the schema is checked once PostgreSQL answers",
                    str(exc) or type(exc).__name__,
                    self.spool.path,
                )

    def _check_schema(self) -> bool:
        """Run the schema check owed since `open`; True once it passed. A wrong version
        (or any refusal) is logged and checked again later: records stay spooled."""
        if not self._schema_owed:
            return True
        now = time.monotonic()
        if now < self._down_until:
            return False
        try:
            self._call(self._open())
        except UNREACHABLE:
            return False
        except (SchemaError, asyncpg.PostgresError) as exc:
            self._down_until = now + RETRY_INTERVAL
            if now >= self._next_schema_log:
                self._next_schema_log = now + SCHEMA_LOG_INTERVAL
                log.error(
                    "audit PostgreSQL answers, but %s; nothing is inserted, records stay in "
                    "the spool %s (%d so far) and the check is retried",
                    exc,
                    self.spool.path if self.spool is not None else "-",
                    self.backlog(),
                )
            return False
        self._schema_owed = False
        log.info("audit PostgreSQL answers and its schema is at version %d", SCHEMA_VERSION)
        return True

    async def _open(self) -> None:
        conn = await self._connection()
        version = await schema_version(conn, self.schema)
        if version != SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise SchemaError(
                f"audit schema {self.schema} in PostgreSQL is at version {version}, "
                + (
                    f"newer than this ktproxy knows ({SCHEMA_VERSION}); upgrade ktproxy"
                    if newer
                    else f"this ktproxy needs version {SCHEMA_VERSION}: run "
                    "`kt audit migrate --policy-config <your config>`"
                )
            )

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                try:
                    self._loop.run(self._close(), self.command_timeout)
                except Exception:  # closing: nothing left to save
                    log.debug("closing the audit PostgreSQL connection failed", exc_info=True)
                self._loop.stop()
                self._loop = None
            if self.spool is not None:
                self.spool.close()
            for orphan in self._orphans or []:
                orphan.close()
            self._orphans = None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(timeout=5)

    # -- writing ------------------------------------------------------------------

    def head(self, chain: str) -> ChainHead:
        """Where `chain` stands: in the spool, else in PostgreSQL. `HeadUnknown` when
        neither can tell (a sink with a spool, PostgreSQL away or its schema unchecked)."""
        with self._lock:
            spooled = self._spooled_head(chain)
            if spooled is not None:
                return spooled
            unknown = (
                f"the spool holds none of chain {chain}'s records, so where it stands is unknown"
            )
            if not self._check_schema():
                raise HeadUnknown(
                    f"PostgreSQL is unreachable or its schema unchecked, and {unknown}"
                )
            try:
                row = self._call(self._head(chain))
            except UNREACHABLE:
                if self.spool is None:
                    raise
                raise HeadUnknown(f"PostgreSQL is unreachable and {unknown}") from None
        return ChainHead(row[0], row[1]) if row else ChainHead()

    def _spooled_head(self, chain: str) -> ChainHead | None:
        """The chain's last record in this instance's own spool (a restart with the
        same instance name while PostgreSQL was away)."""
        if self.spool is None:
            return None
        self.spool.open()
        head = None
        for pts, data in self.spool.entries():
            record = decode(data)
            if record.chain == chain:
                head = ChainHead(record.seq, record.hash)
                self._pts[chain] = pts
        return head

    async def _head(self, chain: str) -> tuple[int, str] | None:
        conn = await self._connection()
        row = await conn.fetchrow(
            f"SELECT seq, hash, pts FROM {self._s}.audit_events WHERE chain = $1 "
            "ORDER BY seq DESC LIMIT 1",
            chain,
        )
        if row is not None:
            self._pts[chain] = row[2]
            return row[0], row[1]
        anchor = await conn.fetchrow(
            f"SELECT seq, hash FROM {self._s}.audit_anchors WHERE chain = $1", chain
        )
        return (anchor[0], anchor[1]) if anchor else None

    def _place(self, rows: Sequence[tuple[AuditRecord, bytes]]) -> list[tuple[float, bytes]]:
        """Each record's partition time: its `ts`, never before its chain's last one."""
        entries = []
        for record, data in rows:
            pts = max(record.ts, self._pts.get(record.chain, record.ts))
            self._pts[record.chain] = pts
            entries.append((pts, data))
        return entries

    def write(self, rows: Sequence[tuple[AuditRecord, bytes]]) -> None:
        with self._lock:
            entries = self._place(rows)
            if self.spool is None:  # a reader's sink, or one told never to spool
                self._call(self._insert(entries, copy=True))
                return
            if self._replay_locked() and time.monotonic() >= self._down_until:
                try:
                    self._call(self._insert(entries, copy=True))
                    return
                except UNREACHABLE as exc:
                    log.warning("audit PostgreSQL unreachable (%s): spooling records", exc)
            # Behind the spool (or PostgreSQL away): keep the order, keep the records.
            if not self.spool.append(entries):
                log.error(
                    "audit spool %s full (%d bytes): %d record(s) dropped",
                    self.spool.path,
                    self.spool.max_bytes,
                    len(entries),
                )

    def backlog(self) -> int:
        """Records spooled and not yet in PostgreSQL (the writer replays while > 0)."""
        if self.spool is None:
            return 0
        return self.spool.records + sum(o.records for o in self._orphans or [])

    def replay(self) -> bool:
        """Move spooled records into PostgreSQL, oldest first; True when none are left."""
        with self._lock:
            return self._replay_locked()

    def _replay_locked(self) -> bool:
        if self.spool is None:
            return True
        if self._orphans is None:
            self._orphans = self._adopt()
        if not self._check_schema():
            return False
        if not self.spool.records and not self._orphans:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            while self._orphans:
                self._replay_spool(self._orphans[0])
                self._orphans.pop(0).remove()
            if self.spool.records:
                self._replay_spool(self.spool)
                self.spool.clear()
                log.info("audit spool replayed into PostgreSQL")
        except UNREACHABLE:
            return False
        return True

    def _replay_spool(self, spool: Spool) -> None:
        batch: list[tuple[float, bytes]] = []
        for entry in spool.entries():
            batch.append(entry)
            if len(batch) >= 1000:
                self._call(self._insert(batch, copy=False))
                batch = []
        if batch:
            self._call(self._insert(batch, copy=False))

    def _adopt(self) -> list[Spool]:
        """Spools of other instances whose process is gone (their lock is free)."""
        if self.spool is None or self.spool_pattern is None:
            return []
        adopted = []
        own = self.spool.path.resolve()
        for path in sorted(glob.glob(self.spool_pattern)):
            if Path(path).resolve() == own:
                continue
            orphan = Spool(path, self.spool.max_bytes)
            try:
                orphan.open()
            except (SpoolBusy, OSError):
                continue
            if orphan.records:
                log.info("adopting audit spool %s (%d records)", path, orphan.records)
                adopted.append(orphan)
            else:
                orphan.remove()
        return adopted

    async def _insert(self, entries: Sequence[tuple[float, bytes]], copy: bool) -> None:
        conn = await self._connection()
        rows = [_row(pts, decode(data), data) for pts, data in entries]
        await self._ensure_partitions(conn, {int(pts // DAY) * DAY for pts, _ in entries})
        async with conn.transaction():
            if copy:
                await conn.copy_records_to_table(
                    "audit_events", schema_name=self.schema, columns=COLUMNS, records=rows
                )
            else:  # a replay may repeat rows a lost acknowledgement already stored
                await conn.executemany(
                    f"INSERT INTO {self._s}.audit_events ({', '.join(COLUMNS)}) VALUES "
                    f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "
                    "ON CONFLICT DO NOTHING",
                    rows,
                )

    async def _ensure_partitions(self, conn: Any, days: set[int]) -> None:
        missing = sorted(days - self._days)
        if not missing:
            return
        # The day ahead too, so midnight does not wait for DDL.
        missing = sorted(set(missing) | {missing[-1] + DAY})
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _lock_key(self.schema))
            for day in missing:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._s}.{partition_name(day)} PARTITION OF "
                    f"{self._s}.audit_events FOR VALUES FROM ({day}) TO ({day + DAY})"
                )
        self._days.update(missing)

    # -- retention ----------------------------------------------------------------

    def purge(self, before: float) -> int:
        with self._lock:
            removed = self._call(self._purge(before))
            self._days = {d for d in self._days if d + DAY > before}
        return removed

    def partitions(self) -> list[str]:
        """The names of the table's partitions, oldest first."""
        with self._lock:
            return sorted(self._call(self._partitions()))

    async def _partitions(self) -> list[str]:
        conn = await self._connection()
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass($1)",
            f"{self._s}.audit_events",
        )
        return [r[0] for r in rows]

    async def _purge(self, before: float) -> int:
        conn = await self._connection()
        removed = 0
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _lock_key(self.schema))
            old = []
            for name in await self._partitions():
                day = _partition_day(name)
                if day is not None and day + DAY <= before:
                    old.append(f"{self._s}.{name}")
            if not old:
                return 0
            union = " UNION ALL ".join(f"SELECT chain, seq, hash FROM {t}" for t in old)
            removed = await conn.fetchval(f"SELECT count(*) FROM ({union}) AS dropped")
            # `pts` only grows along a chain, so the old partitions hold a prefix of each
            # chain: its last record there is where what stays begins.
            await conn.execute(
                f"INSERT INTO {self._s}.audit_anchors (chain, seq, hash) "
                f"SELECT DISTINCT ON (chain) chain, seq, hash FROM ({union}) AS dropped "
                "ORDER BY chain, seq DESC "
                "ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash "
                "WHERE excluded.seq > audit_anchors.seq"
            )
            for table in old:
                await conn.execute(f"DROP TABLE {table}")
        return int(removed)

    # -- reading ------------------------------------------------------------------

    def query(self, query: Query) -> Page:
        where, args = _where(query)

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.cursor is not None:
            ts, chain, seq = decode_cursor(query.cursor)
            where.append(f"(ts, chain, seq) < ({arg(ts)}, {arg(chain)}, {arg(seq)})")
        sql = f"SELECT record, ts, chain, seq FROM {self._s}.audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY ts DESC, chain DESC, seq DESC LIMIT {arg(query.limit + 1)}"
        with self._lock:
            rows = self._call(self._fetch(sql, args))
        page = Page([decode(r[0]) for r in rows[: query.limit]])
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            page.next_cursor = encode_cursor(last[1], last[2], last[3])
        return page

    def stats(self, query: Query, bucket_s: int) -> Tally:
        # Grouped in PostgreSQL (hash aggregates over the stat columns); only the
        # groups come back.
        where, args = _where(query)
        cond = " WHERE " + " AND ".join(where) if where else ""
        n = len(args)
        b = f"${n + 1}"
        by_time = (
            f"SELECT floor(ts / {b})::bigint - (floor(ts / {b}) * {b} > ts)::int AS b, "
            f"width_bucket(latency_ms, ${n + 2}::float8[]) AS lb, count(*), "
            "sum((summary = 'blocked')::int), sum((summary = 'redacted')::int), "
            "sum(failed::int), sum(streamed::int), sum(tokens), min(latency_ms) "
            f"FROM {self._s}.audit_events{cond} GROUP BY 1, 2"
        )
        by_name = (
            "SELECT consumer, model, blocked_by, count(*), sum((summary = 'blocked')::int) "
            f"FROM {self._s}.audit_events{cond} GROUP BY 1, 2, 3"
        )
        with self._lock:
            times = self._call(self._fetch(by_time, [*args, bucket_s, list(BIN_EDGES)]))
            names = self._call(self._fetch(by_name, args))
        tally = Tally()
        for b, lat_bin, count, blocked, redacted, failed, streamed, tokens, smallest in times:
            bucket = tally.bucket(int(b) * bucket_s)
            bucket.requests += count
            bucket.blocked += blocked
            bucket.redacted += redacted
            bucket.errors += failed
            bucket.streamed += streamed
            bucket.tokens += int(tokens)
            if lat_bin is not None:
                bucket.add_latency(lat_bin, count, smallest)
        for consumer, model, policy, count, blocked in names:
            tally.count("consumers", consumer, count, blocked)
            tally.count("models", model, count, blocked)
            if policy is not None:
                tally.policies[policy] = tally.policies.get(policy, 0) + count
        return tally

    async def _fetch(self, sql: str, args: Sequence[object]) -> list[Any]:
        conn = await self._connection()
        return list(await conn.fetch(sql, *args))

    def chains(self) -> dict[str, ChainHead]:
        with self._lock:
            rows = self._call(
                self._fetch(
                    f"SELECT DISTINCT ON (chain) chain, seq, hash FROM {self._s}.audit_events "
                    "ORDER BY chain, seq DESC",
                    (),
                )
            )
        return {r[0]: ChainHead(r[1], r[2]) for r in rows}

    def verify(self) -> Iterator[ChainProblem]:
        with self._lock:
            anchors = {
                r[0]: ChainHead(r[1], r[2])
                for r in self._call(
                    self._fetch(f"SELECT chain, seq, hash FROM {self._s}.audit_anchors", ())
                )
            }
            chains = sorted(self.chains())
        for chain in chains:
            rows = self._chain_rows(chain)
            yield from verify_chain(chain, (bytes(r[0]) for r in rows), anchors.get(chain))  # type: ignore[call-overload]
            yield from SQLiteSink._columns_agree(chain, rows, _stat_columns)

    def _chain_rows(self, chain: str) -> list[tuple[object, ...]]:
        """One chain's records with their indexed columns, in sequence order."""
        out: list[tuple[object, ...]] = []
        after = -1
        while True:
            with self._lock:
                page = self._call(
                    self._fetch(
                        "SELECT record, id, ts, consumer, model, target, status, summary, "
                        "hash, latency_ms, tokens, blocked_by, failed, seq "
                        f"FROM {self._s}.audit_events WHERE chain = $1 AND seq > $2 "
                        "ORDER BY seq LIMIT 5000",
                        (chain, after),
                    )
                )
            out += [(bytes(r[0]), *tuple(r)[1:13]) for r in page]
            if len(page) < 5000:
                return out
            after = page[-1][13]


def _where(query: Query) -> tuple[list[str], list[object]]:
    """SQL conditions and their arguments (`$1`...) for the filters of `query`."""
    where: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in (
        ("consumer", query.consumer),
        ("target", query.target),
        ("status", query.status),
        ("id", query.request_id),
        ("streamed", query.streamed),
    ):
        if value is not None:
            where.append(f"{column} = {arg(value)}")
    if query.model is not None:
        n = arg(query.model)
        where.append(f"(model = {n} OR upstream_model = {n})")
    if query.since is not None:
        where.append(f"ts >= {arg(query.since)}")
    if query.until is not None:
        where.append(f"ts < {arg(query.until)}")
    if query.decision is not None:
        if query.decision in ("blocked", "redacted", "none"):
            where.append(f"summary = {arg(query.decision)}")
        else:
            where.append(f"codes @> ARRAY[{arg(query.decision)}::text]")
    if query.search is not None:
        exact, needle = id_search(query.search)
        if exact:
            where.append(f"id = {arg(needle)}")
        elif needle.strip("0123456789abcdef"):
            where.append("false")  # ids are hex: nothing else can match
        else:
            where.append(f"strpos(id, {arg(needle)}) > 0")
    return where, args
