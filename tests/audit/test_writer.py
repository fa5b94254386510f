"""The audit writer: never on the request path, nothing lost at shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem
from ktproxy.audit.sink import Page, Query
from ktproxy.audit.sqlite_sink import SQLiteSink
from ktproxy.audit.writer import AuditWriter
from tests.audit.test_sinks import make_record


class SlowSink:
    """A sink whose writes take `delay` seconds and can be made to fail."""

    def __init__(self, delay: float = 0.0, failures: int = 0) -> None:
        self.delay = delay
        self.failures = failures
        self.rows: list[AuditRecord] = []
        self.batches = 0
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    def open(self) -> None:
        pass

    def head(self, chain: str) -> ChainHead:
        return ChainHead()

    def write(self, rows: Sequence[tuple[AuditRecord, bytes]]) -> None:
        self.gate.wait(10)
        time.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.rows += [r for r, _ in rows]
        self.batches += 1

    def query(self, query: Query) -> Page:
        return Page()

    def purge(self, before: float) -> int:
        return 0

    def verify(self) -> Iterator[ChainProblem]:
        return iter(())

    def chains(self) -> dict[str, ChainHead]:
        return {}

    def close(self) -> None:
        self.closed = True


async def test_batches_and_seals_in_order() -> None:
    sink = SlowSink()
    writer = AuditWriter(sink, "gw", batch_size=50, flush_interval=0.05)
    await writer.start()
    for i in range(1, 121):
        assert writer.submit(make_record(i))
    await writer.close()
    assert [r.seq for r in sink.rows] == list(range(1, 121))
    assert all(b.prev_hash == a.hash for a, b in zip(sink.rows, sink.rows[1:], strict=False))
    assert sink.batches < 120  # batched, not one write per record
    assert sink.closed
    assert writer.stats.written == 120


async def test_a_slow_sink_never_blocks_submit() -> None:
    sink = SlowSink()
    sink.gate.clear()  # the sink is stuck
    writer = AuditWriter(sink, "gw", queue_size=100, batch_size=10)
    await writer.start()
    # `submit` is a plain call that never awaits: beyond the bounded queue, records are
    # dropped and counted, never waited for.
    results = [writer.submit(make_record(i)) for i in range(1, 201)]
    assert results.count(True) == 100
    assert results.count(False) == writer.stats.dropped == 100
    sink.gate.set()
    await writer.close()
    assert len(sink.rows) == results.count(True)


async def test_block_mode_waits_for_room_and_loses_nothing() -> None:
    sink = SlowSink(delay=0.01)
    writer = AuditWriter(sink, "gw", queue_size=5, batch_size=5, on_overflow="block")
    await writer.start()
    await asyncio.gather(*(writer.put(make_record(i)) for i in range(1, 61)))
    await writer.close()
    assert len(sink.rows) == 60
    assert writer.stats.dropped == 0


async def test_block_mode_waits_a_bounded_time_then_drops_and_counts() -> None:
    sink = SlowSink()
    sink.gate.clear()  # the sink is stuck: no room will ever come
    writer = AuditWriter(
        sink, "gw", queue_size=2, batch_size=1, on_overflow="block", block_timeout=0.05
    )
    await writer.start()
    # The writer holds one record in its stuck batch, the queue two more; the rest each
    # wait `block_timeout` for room, then are dropped and counted (never waited forever).
    async with asyncio.timeout(30):
        await asyncio.gather(*(writer.put(make_record(i)) for i in range(1, 11)))
    assert writer.stats.dropped >= 7
    assert writer.stats.submitted + writer.stats.dropped == 10
    sink.gate.set()
    await writer.close()
    assert len(sink.rows) == writer.stats.submitted


async def test_a_failing_sink_is_retried() -> None:
    sink = SlowSink(failures=3)
    writer = AuditWriter(sink, "gw", batch_size=100)
    await writer.start()
    for i in range(1, 11):
        writer.submit(make_record(i))
    await writer.close()
    assert [r.seq for r in sink.rows] == list(range(1, 11))
    assert writer.stats.write_failures == 3


async def test_retention_purges_while_running(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "audit.db")
    writer = AuditWriter(sink, "gw", retention_days=1, purge_interval=0.05, flush_interval=0.01)
    await writer.start()
    old = time.time() - 3 * 86400
    for i in range(1, 6):
        writer.submit(make_record(i, ts=old + i))
    for i in range(6, 9):
        writer.submit(make_record(i, ts=time.time()))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if writer.stats.purged:
            break
    await writer.close()
    check = SQLiteSink(tmp_path / "audit.db")
    left = check.query(Query()).records
    assert sorted(r.seq for r in left) == [6, 7, 8]
    assert list(check.verify()) == []
    check.close()


async def test_an_idle_writer_still_purges(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "audit.db")
    old = time.time() - 3 * 86400
    first = AuditWriter(sink, "gw")
    await first.start()
    for i in range(1, 4):
        first.submit(make_record(i, ts=old + i))
    await first.close()
    writer = AuditWriter(SQLiteSink(tmp_path / "audit.db"), "gw", retention_days=1)
    await writer.start()  # nothing is ever submitted
    for _ in range(100):
        await asyncio.sleep(0.02)
        if writer.stats.purged:
            break
    await writer.close()
    assert writer.stats.purged == 3
