"""Both audit sinks: writing, querying, retention, and tamper evidence."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from ktproxy.audit.jsonl_sink import JSONLSink
from ktproxy.audit.record import (
    GENESIS,
    AuditRecord,
    ChainHead,
    PolicyDecision,
    Usage,
    encode,
    seal,
)
from ktproxy.audit.sink import AuditSink, Query
from ktproxy.audit.sqlite_sink import SQLiteSink

T0 = 1_700_000_000.0


def make_record(i: int, **over: object) -> AuditRecord:
    fields: dict[str, object] = {
        "id": f"req{i:04d}",
        "ts": T0 + i,
        "endpoint": "chat.completions",
        "model": "gpt-4o" if i % 2 else "gpt-4o-mini",
        "streamed": i % 3 == 0,
        "status": 200,
        "consumer": "team-a" if i % 4 else "team-b",
        "target": "openai-primary",
        "provider": "openai",
        "upstream_model": "gpt-4o",
        "latency_ms": 12.5,
        "usage": Usage(10, 5, 15),
        "decisions": [PolicyDecision("pii-detector", "redact", None, {"EMAIL": 1})]
        if i % 5 == 0
        else [],
    }
    fields.update(over)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def append(sink: AuditSink, chain: str, records: list[AuditRecord]) -> None:
    head = sink.head(chain)
    rows = []
    for r in records:
        sealed, data = seal(r, chain, head.seq + 1, head.hash)
        rows.append((sealed, data))
        head = ChainHead(sealed.seq, sealed.hash)
    sink.write(rows)


@pytest.fixture(params=["sqlite", "jsonl"])
def make_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], AuditSink]]:
    made: list[AuditSink] = []

    def factory() -> AuditSink:
        sink: AuditSink
        if request.param == "sqlite":
            sink = SQLiteSink(tmp_path / "audit.db")
        else:
            sink = JSONLSink(tmp_path / "audit.jsonl", max_bytes=4096)
        sink.open()
        made.append(sink)
        return sink

    yield factory
    for s in made:
        s.close()


def test_chain_continues_across_reopen(make_sink: Callable[[], AuditSink]) -> None:
    sink = make_sink()
    assert sink.head("gw-1") == ChainHead(0, GENESIS)
    append(sink, "gw-1", [make_record(i) for i in range(1, 6)])
    again = make_sink()
    head = again.head("gw-1")
    assert head.seq == 5
    append(again, "gw-1", [make_record(i) for i in range(6, 9)])
    append(again, "gw-2", [make_record(i) for i in range(9, 11)])
    assert list(again.verify()) == []
    assert {c: h.seq for c, h in again.chains().items()} == {"gw-1": 8, "gw-2": 2}


def test_query_filters_and_pages_newest_first(make_sink: Callable[[], AuditSink]) -> None:
    sink = make_sink()
    append(sink, "gw", [make_record(i) for i in range(1, 41)])
    everything = sink.query(Query(limit=1000)).records
    assert [r.id for r in everything] == [f"req{i:04d}" for i in range(40, 0, -1)]
    seen: list[str] = []
    cursor = None
    while True:
        page = sink.query(Query(limit=7, cursor=cursor))
        seen += [r.id for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [r.id for r in everything]
    assert {r.consumer for r in sink.query(Query(consumer="team-b")).records} == {"team-b"}
    assert all(r.streamed for r in sink.query(Query(streamed=True)).records)
    window = sink.query(Query(since=T0 + 10, until=T0 + 20)).records
    assert [r.id for r in window] == [f"req{i:04d}" for i in range(19, 9, -1)]
    redacted = sink.query(Query(decision="redacted")).records
    assert {r.id for r in redacted} == {f"req{i:04d}" for i in range(5, 41, 5)}
    assert sink.query(Query(decision="pii-detector")).records == redacted
    assert sink.query(Query(request_id="req0007")).records[0].id == "req0007"
    assert len(sink.query(Query(model="gpt-4o-mini")).records) == 20
    assert sink.query(Query(status=500)).records == []


def test_purge_keeps_what_is_left_verifiable(make_sink: Callable[[], AuditSink]) -> None:
    sink = make_sink()
    for start in range(1, 200, 20):  # several writes: several files for JSON lines
        append(sink, "gw", [make_record(i) for i in range(start, start + 20)])
    removed = sink.purge(before=T0 + 100)
    assert removed > 0
    left = sink.query(Query(limit=1000)).records
    assert all(r.ts >= T0 + 100 for r in left) or isinstance(sink, JSONLSink)
    assert min(r.seq for r in left) == removed + 1  # a prefix went
    assert list(sink.verify()) == []
    append(sink, "gw", [make_record(500)])
    assert list(sink.verify()) == []


def _tamper_sqlite(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql)
    db.close()


def test_verify_finds_edits_and_deletions_sqlite(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "audit.db")
    append(sink, "gw", [make_record(i) for i in range(1, 11)])
    sink.close()
    path = tmp_path / "audit.db"

    # Edit the stored record (status 200 -> 201) without fixing the hash.
    db = sqlite3.connect(path)
    (data,) = db.execute("SELECT record FROM audit_events WHERE seq = 4").fetchone()
    db.close()
    edited = data.replace(b'"status":200', b'"status":201')
    _tamper_sqlite(path, f"UPDATE audit_events SET record = x'{edited.hex()}' WHERE seq = 4")
    problems = list(SQLiteSink(path).verify())
    assert [(p.seq, "edited" in p.problem) for p in problems if p.seq == 4][0] == (4, True)

    # Rewriting the record *and* its hash breaks the link from the next record.
    sink = SQLiteSink(path)
    rec = msgspec.json.decode(edited, type=AuditRecord)
    resealed, resealed_data = seal(rec, "gw", 4, rec.prev_hash)
    _tamper_sqlite(
        path,
        f"UPDATE audit_events SET record = x'{resealed_data.hex()}', hash = '{resealed.hash}', "
        "status = 201 WHERE seq = 4",
    )
    problems = list(SQLiteSink(path).verify())
    assert any(p.seq == 5 and "link" in p.problem for p in problems)

    # A deleted record leaves a gap.
    _tamper_sqlite(path, "DELETE FROM audit_events WHERE seq = 7")
    problems = list(SQLiteSink(path).verify())
    assert any(p.seq == 8 and "missing" in p.problem for p in problems)

    # Hiding a record from queries by editing an indexed column is caught too.
    _tamper_sqlite(path, "UPDATE audit_events SET consumer = 'nobody' WHERE seq = 2")
    problems = list(SQLiteSink(path).verify())
    assert any(p.seq == 2 and "columns" in p.problem for p in problems)
    sink.close()


def test_verify_finds_edits_and_deletions_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JSONLSink(path)
    append(sink, "gw", [make_record(i) for i in range(1, 11)])
    assert list(sink.verify()) == []
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"consumer":"team-a"', b'"consumer":"team-z"')
    path.write_bytes(b"\n".join(lines))
    assert [p.seq for p in sink.verify()] == [3]
    del lines[5]
    lines[2] = encode(msgspec.json.decode(lines[2], type=AuditRecord))  # still edited
    path.write_bytes(b"\n".join(lines))
    problems = list(sink.verify())
    assert any(p.seq == 7 and "missing" in p.problem for p in problems)


def test_jsonl_rotates_and_bounds_its_files(tmp_path: Path) -> None:
    sink = JSONLSink(tmp_path / "audit.jsonl", max_bytes=2048, keep_files=3)
    for start in range(1, 400, 10):
        append(sink, "gw", [make_record(i) for i in range(start, start + 10)])
    rotated = sorted(tmp_path.glob("audit.jsonl.*.rotated"))
    assert len(rotated) == 3
    assert list(sink.verify()) == []  # the dropped files moved the anchor
    assert sink.head("gw").seq == 400


def test_records_never_carry_redacted_values_by_construction() -> None:
    # Decisions hold counts by kind; the type has no field for values.
    assert set(PolicyDecision.__struct_fields__) == {"policy", "action", "code", "counts"}


def test_the_store_finds_an_instance_with_only_rotated_files(tmp_path: Path) -> None:
    from ktproxy.audit.store import open_sinks
    from ktproxy.policies.audit_logger import AuditOptions

    live = tmp_path / "audit-gw1.jsonl"
    sink = JSONLSink(live, max_bytes=4096)
    append(sink, "gw1", [make_record(i) for i in range(1, 4)])
    sink._rotate()  # what a write past max_bytes does: no live file left
    assert not live.exists()
    options = AuditOptions(sink="jsonl", path=str(tmp_path / "audit-{instance}.jsonl"))
    (found,) = open_sinks(options)
    assert isinstance(found, JSONLSink) and found.path == live
    assert found.head("gw1").seq == 3
    assert list(found.verify()) == []


def test_rotated_names_sort_in_write_order_even_if_the_clock_steps_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = JSONLSink(tmp_path / "audit.jsonl", max_bytes=1, keep_files=100)
    clock = iter([T0 + 10.999999, T0 + 10.0, T0 + 5.0, T0 + 11.0])  # steps back twice
    monkeypatch.setattr(time, "time", lambda: next(clock))
    for i in range(1, 5):
        append(sink, "gw", [make_record(i)])  # each write rotates (max_bytes=1)
    names = sorted(p.name for p in tmp_path.glob("audit.jsonl.*.rotated"))
    seqs = [msgspec.json.decode(p.read_bytes().splitlines()[0], type=AuditRecord).seq
            for p in sorted(tmp_path.glob("audit.jsonl.*.rotated"))]  # fmt: skip
    assert len(names) == 4 and seqs == [1, 2, 3, 4]
    assert sink.head("gw").seq == 4
    assert list(sink.verify()) == []
