"""Audit stats: every store gives what the pure-Python reference gives, quantiles keep
their stated error bound, the id search, bucket choice and the SQLite migration."""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from ktproxy.audit.jsonl_sink import JSONLSink
from ktproxy.audit.postgres_sink import PostgresSink, SchemaError, migrate
from ktproxy.audit.record import AuditRecord, ChainHead, PolicyDecision, Usage, seal
from ktproxy.audit.sink import AuditSink, Query, matches
from ktproxy.audit.sqlite_sink import SQLiteSink
from ktproxy.audit.stats import (
    BIN_EDGES,
    BIN_GROWTH,
    Stats,
    bucket_count,
    bucket_start,
    choose_bucket,
    finish,
    latency_bin,
    quantile,
    tally_records,
)
from ktproxy.audit.store import stats_sinks
from tests.fleet.conftest import postgres_dsn  # noqa: F401  (a fixture)

T0 = 1_764_000_000.0
SPAN = 3 * 86400.0


def generate(n: int, seed: int, chains: int = 2) -> list[list[tuple[AuditRecord, bytes]]]:
    """`n` sealed records over `SPAN` seconds in `chains` chains: blocked, redacted,
    failed, streamed, without latency or usage, several consumers and models."""
    rng = random.Random(seed)
    heads = [ChainHead() for _ in range(chains)]
    out: list[list[tuple[AuditRecord, bytes]]] = [[] for _ in range(chains)]
    for i in range(n):
        decisions: list[PolicyDecision] = []
        status: int | None = 200
        error = None
        kind = rng.random()
        if kind < 0.1:
            policy = rng.choice(["prompt-injection", "deny-list"])
            decisions.append(PolicyDecision(policy, "block", f"{policy}.rule{rng.randint(1, 3)}"))
            if rng.random() < 0.2:  # a second block: the first one counts
                decisions.append(PolicyDecision("pii-detector", "block", "pii.card"))
            status = 422
        elif kind < 0.3:
            decisions.append(PolicyDecision("pii-detector", "redact", None, {"EMAIL": 1}))
        elif kind < 0.35:
            decisions.append(PolicyDecision("pii-detector", "log", None, {"EMAIL": 2}))
        elif kind < 0.45:
            status = rng.choice([400, 429, 502, 504])
        elif kind < 0.5:
            status, error = None, "client went away"
        elif kind < 0.52:
            status = None
        latency = None if rng.random() < 0.1 else rng.lognormvariate(3, 1.5)
        if latency is not None and rng.random() < 0.02:
            latency = rng.choice([0.0, 1e-4, BIN_EDGES[500]])  # tiny, and on an edge
        usage = None
        if rng.random() < 0.8:
            usage = (
                Usage(rng.randint(1, 500), rng.randint(0, 500), None)
                if rng.random() < 0.2
                else Usage(None, None, rng.randint(1, 2000))
            )
        record = AuditRecord(
            id=secrets.token_hex(16) if i % 7 else f"{i:032x}",
            ts=T0 + rng.random() * SPAN,
            endpoint="/v1/chat/completions",
            model=rng.choice(["gpt-4o", "gpt-4o-mini", "claude", "llama", "other"]),
            upstream_model=rng.choice([None, "gpt-4o-2024"]),
            streamed=rng.random() < 0.4,
            status=status,
            error=error,
            consumer=rng.choice([None, "team-a", "team-b", "team-c", "Zeta", "ops"]),
            target=rng.choice(["primary", "backup"]),
            latency_ms=latency,
            usage=usage,
            decisions=decisions,
        )
        c = i % chains
        sealed, data = seal(record, f"chain-{c}", heads[c].seq + 1, heads[c].hash)
        heads[c] = ChainHead(sealed.seq, sealed.hash)
        out[c].append((sealed, data))
    return out


def reference(rows: list[list[tuple[AuditRecord, bytes]]], query: Query, bucket_s: int) -> Stats:
    assert query.since is not None and query.until is not None
    found = [r for chain in rows for r, _ in chain if matches(r, query)]
    return finish(tally_records(found, bucket_s), query.since, query.until, bucket_s)


def of(sinks: list[AuditSink], query: Query, bucket_s: int) -> Stats:
    assert query.since is not None and query.until is not None
    return finish(stats_sinks(sinks, query, bucket_s), query.since, query.until, bucket_s)


QUERIES = [
    (Query(since=T0, until=T0 + SPAN), 3600),
    (Query(since=T0 + 1234.5, until=T0 + 86400), 900),
    (Query(since=T0 - 7200, until=T0 + SPAN + 7200), 86400),
    (Query(since=T0, until=T0 + SPAN, consumer="team-a"), 3600),
    (Query(since=T0, until=T0 + SPAN, model="gpt-4o-2024"), 3600),
    (Query(since=T0, until=T0 + SPAN, decision="blocked"), 21600),
    (Query(since=T0, until=T0 + SPAN, decision="prompt-injection.rule2"), 21600),
    (Query(since=T0, until=T0 + SPAN, streamed=True, status=200), 3600),
    (Query(since=T0, until=T0 + SPAN, target="backup", decision="redacted"), 60 * 60 * 6),
    (Query(since=T0 + 100, until=T0 + 160), 10),
    (Query(since=T0 + 3600.5, until=T0 + SPAN - 100), 43200),  # the per-bin plan
]


@pytest.fixture(scope="module")
def generated() -> list[list[tuple[AuditRecord, bytes]]]:
    return generate(3000, seed=20261129)


def _load(sink: AuditSink, rows: list[list[tuple[AuditRecord, bytes]]]) -> None:
    sink.open()
    for chain in rows:
        for start in range(0, len(chain), 500):
            sink.write(chain[start : start + 500])


def test_sqlite_and_jsonl_give_the_reference_stats(
    tmp_path: Path, generated: list[list[tuple[AuditRecord, bytes]]]
) -> None:
    sqlite = SQLiteSink(tmp_path / "audit.db")
    _load(sqlite, generated)
    # JSON lines: one file per instance (chain), merged as the store merges them.
    jsonl: list[AuditSink] = []
    for i, chain in enumerate(generated):
        sink = JSONLSink(tmp_path / f"audit-{i}.jsonl")
        _load(sink, [chain])
        jsonl.append(sink)
    for query, bucket_s in QUERIES:
        expected = reference(generated, query, bucket_s)
        assert expected.totals.requests > 0 or query.until - query.since < 100  # type: ignore[operator]
        assert of([sqlite], query, bucket_s) == expected, query
        assert of(jsonl, query, bucket_s) == expected, query
    assert list(sqlite.verify()) == []
    sqlite.close()


def test_postgres_gives_the_reference_stats(
    postgres_dsn: str,  # noqa: F811
    generated: list[list[tuple[AuditRecord, bytes]]],
) -> None:
    schema = f"kt_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(migrate(postgres_dsn, schema))
        sink = PostgresSink(postgres_dsn, schema)
        _load(sink, generated)
        try:
            for query, bucket_s in QUERIES:
                assert of([sink], query, bucket_s) == reference(generated, query, bucket_s), query
        finally:
            sink.close()
    finally:
        asyncio.run(_drop(postgres_dsn, schema))


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def test_the_reference_counts_what_the_contract_says() -> None:
    rows = generate(400, seed=7, chains=1)
    records = [r for r, _ in rows[0]]
    stats = finish(tally_records(records, 3600), T0, T0 + SPAN, 3600)
    t = stats.totals
    assert t.requests == 400
    assert t.blocked == sum(r.blocked for r in records)
    assert t.streamed == sum(r.streamed for r in records)
    assert t.errors == sum(
        (not r.blocked)
        and (
            (r.status is not None and r.status >= 400) or (r.status is None and r.error is not None)
        )
        for r in records
    )
    assert sum(p.blocked for p in stats.blocks_by_policy) == t.blocked
    for p in stats.blocks_by_policy:
        assert p.rate == p.blocked / t.requests
    assert len(stats.series) == 72 and [p.t for p in stats.series] == [
        T0 - T0 % 3600 + 3600 * i for i in range(72)
    ]
    assert sum(p.requests for p in stats.series) == 400
    assert "(none)" in [c.name for c in stats.top_consumers]
    assert [c.requests for c in stats.top_models] == sorted(
        (c.requests for c in stats.top_models), reverse=True
    )


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("seed", range(20))
def test_binned_quantiles_stay_within_the_stated_bound(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(rng.uniform(-3, 8), rng.uniform(0.1, 3)) for _ in range(1, 500)]
    histogram: dict[int, list[float]] = {}
    for v in values:
        held = histogram.setdefault(latency_bin(v), [0, v])
        held[0] += 1
        held[1] = min(held[1], v)
    for q in (0.5, 0.9, 0.99, 1.0):
        exact = _nearest_rank(values, q)
        got = quantile(histogram, q)
        assert got is not None and got in values
        assert exact / BIN_GROWTH < got <= exact


def test_latency_bins_are_the_edges() -> None:
    assert latency_bin(0.0) == 0
    assert latency_bin(BIN_EDGES[0]) == 1
    assert latency_bin(math.nextafter(BIN_EDGES[10], 0)) == 10
    assert latency_bin(BIN_EDGES[10]) == 11
    assert latency_bin(1e12) == len(BIN_EDGES)


def test_an_empty_window_is_zero_filled() -> None:
    stats = finish(tally_records([], 60), T0, T0 + 3600, 60)
    assert len(stats.series) == 60
    assert all(p.requests == 0 and p.p50_ms is None for p in stats.series)
    assert stats.totals.requests == 0 and stats.totals.p99_ms is None
    assert stats.blocks_by_policy == [] and stats.top_consumers == []


@pytest.mark.parametrize(
    ("span", "bucket"),
    [(600, 10), (3600, 60), (3 * 3600, 300), (86400, 900), (7 * 86400, 86400), (5e7, 86400)],
)
def test_the_default_bucket_gives_at_most_120(span: float, bucket: int) -> None:
    since = T0 + 5
    assert choose_bucket(since, since + span) == bucket
    if span < 1e7:
        assert bucket_count(since, since + span, bucket) <= 120


def test_buckets_are_aligned_to_the_epoch() -> None:
    assert bucket_start(T0 + 59.9, 60) == T0 - T0 % 60
    assert bucket_count(T0, T0 + 60, 60) == 1 + (T0 % 60 != 0)
    assert bucket_count(120.0, 180.0, 60) == 1


def _ids(sink: AuditSink, text: str) -> set[str]:
    return {r.id for r in sink.query(Query(search=text, limit=1000)).records}


def test_the_id_search_in_every_store(
    tmp_path: Path,
    postgres_dsn: str,  # noqa: F811
) -> None:
    rows = generate(300, seed=3, chains=1)
    records = [r for r, _ in rows[0]]
    target = records[150].id
    schema = f"kt_test_{secrets.token_hex(6)}"
    asyncio.run(migrate(postgres_dsn, schema))
    sinks: list[AuditSink] = [
        SQLiteSink(tmp_path / "a.db"),
        JSONLSink(tmp_path / "a.jsonl"),
        PostgresSink(postgres_dsn, schema),
    ]
    try:
        for sink in sinks:
            _load(sink, rows)
            assert _ids(sink, target) == {target}
            assert _ids(sink, target.upper()) == {target}
            assert _ids(sink, f"  {target} ") == {target}
            part = target[5:11]
            assert _ids(sink, part.upper()) == {r.id for r in records if part in r.id}
            assert _ids(sink, "00000000") == {r.id for r in records if "00000000" in r.id}
            assert len(_ids(sink, "00000000")) >= 10
            assert _ids(sink, "not-an-id") == set()
            assert _ids(sink, "g" * 32) == set()
            # With other filters and paging: only records that match both.
            page = sink.query(Query(search="0000", consumer="team-a", limit=3))
            want = sorted(
                (r for r in records if "0000" in r.id and r.consumer == "team-a"),
                key=lambda r: (r.ts, r.chain, r.seq),
                reverse=True,
            )
            assert [r.id for r in page.records] == [r.id for r in want[:3]]
            nxt = sink.query(
                Query(search="0000", consumer="team-a", limit=3, cursor=page.next_cursor)
            )
            assert [r.id for r in nxt.records] == [r.id for r in want[3:6]]
    finally:
        for sink in sinks:
            sink.close()
        asyncio.run(_drop(postgres_dsn, schema))


OLD_SCHEMA = """
CREATE TABLE audit_events (
    chain TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, ts REAL NOT NULL,
    consumer TEXT, model TEXT NOT NULL, upstream_model TEXT, target TEXT, status INTEGER,
    streamed INTEGER NOT NULL, summary TEXT NOT NULL, codes TEXT NOT NULL,
    record BLOB NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_events_ts ON audit_events (ts, chain, seq);
CREATE INDEX audit_events_id ON audit_events (id);
CREATE TABLE audit_anchors (chain TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);
"""


@pytest.fixture
def old_file(tmp_path: Path) -> Iterator[tuple[Path, list[list[tuple[AuditRecord, bytes]]]]]:
    """A store written by the ktproxy before stats (no stat columns, no cover index)."""
    from ktproxy.audit.sink import decision_summary
    from ktproxy.audit.sqlite_sink import _codes

    rows = generate(1200, seed=11)
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    with db:
        db.executemany(
            "INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    r.chain,
                    r.seq,
                    r.id,
                    r.ts,
                    r.consumer,
                    r.model,
                    r.upstream_model,
                    r.target,
                    r.status,
                    int(r.streamed),
                    decision_summary(r),
                    _codes(r),
                    data,
                    r.hash,
                )
                for chain in rows
                for r, data in chain
            ],  # fmt: skip
        )
    db.close()
    yield path, rows


def test_an_old_sqlite_file_is_migrated_in_place(
    old_file: tuple[Path, list[list[tuple[AuditRecord, bytes]]]],
) -> None:
    path, rows = old_file
    sink = SQLiteSink(path)
    sink.open()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "audit_events_cover" in indexes and "audit_events_ts" not in indexes
    assert db.execute("SELECT count(*) FROM audit_events WHERE tokens > 0").fetchone()[0] > 0
    db.close()
    for query, bucket_s in QUERIES[:4]:
        assert of([sink], query, bucket_s) == reference(rows, query, bucket_s)
    assert list(sink.verify()) == []
    # New records go in beside the migrated ones; opening again changes nothing.
    more = generate(10, seed=12, chains=1)[0]
    head = sink.head("chain-0")
    placed = []
    for r, _ in more:
        sealed, data = seal(
            msgspec.structs.replace(r, chain=""), "chain-0", head.seq + 1, head.hash
        )
        head = ChainHead(sealed.seq, sealed.hash)
        placed.append((sealed, data))
    sink.write(placed)
    sink.close()
    again = SQLiteSink(path)
    assert list(again.verify()) == []
    assert of([again], QUERIES[0][0], 3600).totals.requests >= 1200
    again.close()


def test_verify_names_a_stat_column_that_lies(tmp_path: Path) -> None:
    rows = generate(50, seed=5, chains=1)
    sink = SQLiteSink(tmp_path / "a.db")
    _load(sink, rows)
    victim = rows[0][20][0]
    db = sqlite3.connect(tmp_path / "a.db")
    with db:
        db.execute("UPDATE audit_events SET tokens = tokens + 1 WHERE id = ?", (victim.id,))
    db.close()
    problems = list(sink.verify())
    sink.close()
    assert [(p.seq, p.problem) for p in problems] == [
        (victim.seq, "indexed columns differ from the record")
    ]


def test_postgres_schema_2_fills_the_stat_columns_of_version_1_rows(
    postgres_dsn: str,  # noqa: F811
) -> None:
    rows = generate(600, seed=13)
    schema = f"kt_test_{secrets.token_hex(6)}"
    try:
        assert asyncio.run(migrate(postgres_dsn, schema)) == (0, 2)
        sink = PostgresSink(postgres_dsn, schema)
        _load(sink, rows)
        sink.close()
        asyncio.run(_downgrade_to_1(postgres_dsn, schema))  # rows as version 1 wrote them
        refused = PostgresSink(postgres_dsn, schema)
        with pytest.raises(SchemaError, match="needs version 2: run `kt audit migrate"):
            refused.open()
        refused.close()
        assert asyncio.run(migrate(postgres_dsn, schema)) == (1, 2)
        assert asyncio.run(migrate(postgres_dsn, schema)) == (2, 2)
        sink = PostgresSink(postgres_dsn, schema)
        sink.open()
        try:
            for query, bucket_s in QUERIES[:4]:
                assert of([sink], query, bucket_s) == reference(rows, query, bucket_s)
            assert list(sink.verify()) == []
        finally:
            sink.close()
    finally:
        asyncio.run(_drop(postgres_dsn, schema))


async def _downgrade_to_1(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f'ALTER TABLE "{schema}".audit_events DROP COLUMN latency_ms, DROP COLUMN tokens, '
            "DROP COLUMN blocked_by, DROP COLUMN failed"
        )
        await conn.execute(f'DELETE FROM "{schema}".schema_version WHERE version = 2')
    finally:
        await conn.close()
