"""The background writer: audit records leave the request path through a queue.

`submit` never waits (unless `on_overflow: block`): a record goes into a bounded
queue that one task drains in batches, sealing each record into the instance's hash
chain and handing the batch to the sink in a worker thread. A full queue either
drops the record and counts it (`drop`, the default: the gateway keeps serving) or
makes the request wait for room (`block`: requests slow down, and a record that
finds no room within `block_timeout` seconds is dropped and counted, so a stuck sink
cannot hold requests forever). A failing sink keeps its batch and retries with
backoff; the queue absorbs the wait. Retention runs in the same task, every
`purge_interval` seconds. A sink that keeps records aside while its backend is away
(the PostgreSQL sink's spool) has `backlog()` and `replay()`: an idle writer calls
`replay` every `REPLAY_INTERVAL` seconds while the backlog lasts. `close` drains the
queue before it returns.

A sink that cannot tell where the chain stands at start-up (PostgreSQL away, nothing
of the chain in its spool) raises `HeadUnknown` from `head`. Sealing onto a guessed
head would fork the chain, so the writer starts a new chain from the genesis for this
process, `<chain>+<UTC start time>`, and says so; the old chain ends where it ended
and `kt audit verify` checks both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ktproxy.audit.record import AuditRecord, ChainHead, seal
from ktproxy.audit.sink import AuditSink, HeadUnknown

log = logging.getLogger("ktproxy.audit")

_STOP = object()
DROP_LOG_INTERVAL = 10.0  # seconds between two "queue full" warnings
REPLAY_INTERVAL = 1.0  # seconds between two replays of a sink's spool while idle


@dataclass(slots=True)
class WriterStats:
    """Counters an operator (and `/metrics`) reads."""

    submitted: int = 0
    written: int = 0
    dropped: int = 0
    write_failures: int = 0
    purged: int = 0
    batches: int = 0


class AuditWriter:
    """Drains audit records into one sink, in one chain."""

    def __init__(
        self,
        sink: AuditSink,
        chain: str,
        *,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval: float = 0.2,
        on_overflow: Literal["drop", "block"] = "drop",
        block_timeout: float = 5.0,
        retention_days: float | None = None,
        purge_interval: float = 3600.0,
    ) -> None:
        self.sink = sink
        self.chain = chain
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_overflow = on_overflow
        self.block_timeout = block_timeout
        self.retention_days = retention_days
        self.purge_interval = purge_interval
        self.stats = WriterStats()
        self._queue: asyncio.Queue[object] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._head = ChainHead()
        self._next_purge = 0.0
        self._next_drop_log = 0.0

    @property
    def depth(self) -> int:
        """Records waiting in the queue."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Open the sink, find where this instance's chain stands, start draining."""
        await asyncio.to_thread(self.sink.open)
        try:
            self._head = await asyncio.to_thread(self.sink.head, self.chain)
        except HeadUnknown as exc:
            await self._start_new_chain(exc)
        self._next_purge = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"audit-writer:{self.chain}")

    async def _start_new_chain(self, why: HeadUnknown) -> None:
        """Write this process's records in a chain of its own, `<chain>+<start time>`."""
        old = self.chain
        self.chain = f"{old}+{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        try:
            # A restart within the same second finds the chain in the sink's spool:
            # continuing it is as sound as continuing any spooled chain.
            self._head = await asyncio.to_thread(self.sink.head, self.chain)
        except HeadUnknown:
            self._head = ChainHead()
        log.warning(
            "audit chain %s: %s; writing this process's records in a new chain %s "
            "(kt audit verify checks both)",
            old,
            why,
            self.chain,
        )

    def submit(self, record: AuditRecord) -> bool:
        """Queue `record` without waiting; False when it was dropped (queue full)."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._drop()
            return False
        self.stats.submitted += 1
        return True

    def _drop(self) -> None:
        self.stats.dropped += 1
        now = time.monotonic()
        if now >= self._next_drop_log:  # one line per interval, not one per record
            self._next_drop_log = now + DROP_LOG_INTERVAL
            log.warning(
                "audit queue full (%d records): dropping records, %d so far "
                "(on_overflow: %s; see ktproxy_audit_records_total)",
                self._queue.maxsize,
                self.stats.dropped,
                self.on_overflow,
            )

    async def put(self, record: AuditRecord) -> None:
        """Queue `record` as the overflow policy says: drop when full, or wait for room
        (at most `block_timeout` seconds, then drop)."""
        if self.on_overflow != "block" or not self._queue.full():
            self.submit(record)
            return
        try:
            await asyncio.wait_for(self._queue.put(record), self.block_timeout)
        except TimeoutError:
            self._drop()
            return
        self.stats.submitted += 1

    async def close(self) -> None:
        """Write everything queued, then close the sink."""
        if self._task is not None:
            await self._queue.put(_STOP)
            await self._task
            self._task = None
        await asyncio.to_thread(self.sink.close)

    async def _next_batch(self) -> tuple[list[AuditRecord], bool]:
        """Up to `batch_size` records: waits for the first, then up to `flush_interval`."""
        batch: list[AuditRecord] = []
        waits = []  # an idle gateway still purges on time and replays a spool
        if self.retention_days is not None:
            waits.append(max(0.0, self._next_purge - time.monotonic()))
        if self._backlog():
            waits.append(REPLAY_INTERVAL)
        if not waits:
            first = await self._queue.get()
        else:
            try:
                first = await asyncio.wait_for(self._queue.get(), min(waits))
            except TimeoutError:
                return batch, False
        if first is _STOP:
            return batch, True
        batch.append(first)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _backlog(self) -> int:
        """Records the sink holds aside for later (a spool), if it has such a place."""
        backlog = getattr(self.sink, "backlog", None)
        return int(backlog()) if backlog is not None else 0

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = await self._next_batch()
            if batch:
                await self._write(batch, retry=not stopping)
            elif self._backlog() or stopping:
                await self._replay()
            await self._maybe_purge()

    async def _replay(self) -> None:
        """Let a sink with a spool move it on (it says whether its backend is back)."""
        replay = getattr(self.sink, "replay", None)
        if replay is None:
            return
        try:
            await asyncio.to_thread(replay)
        except Exception:
            log.exception("audit spool replay failed; retried in %.0f s", REPLAY_INTERVAL)

    async def _write(self, batch: list[AuditRecord], retry: bool) -> None:
        head = self._head
        rows = []
        for record in batch:
            sealed, data = seal(record, self.chain, head.seq + 1, head.hash)
            rows.append((sealed, data))
            head = ChainHead(sealed.seq, sealed.hash)
        delay = 0.05
        while True:
            try:
                await asyncio.to_thread(self.sink.write, rows)
                break
            except Exception:
                self.stats.write_failures += 1
                log.exception("audit sink write failed (%d records kept)", len(rows))
                if not retry and delay > 1.0:
                    self.stats.dropped += len(rows)
                    log.error("audit records lost at shutdown: %d", len(rows))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._head = head
        self.stats.written += len(rows)
        self.stats.batches += 1

    async def _maybe_purge(self) -> None:
        if self.retention_days is None or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.purge_interval
        cutoff = time.time() - self.retention_days * 86400
        try:
            self.stats.purged += await asyncio.to_thread(self.sink.purge, cutoff)
        except Exception:
            log.exception("audit retention purge failed; retried in %.0f s", self.purge_interval)
