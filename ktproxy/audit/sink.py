"""The interface every audit sink implements, and the filters of a query.

Sinks are synchronous and called from one writer task through a worker thread
(`asyncio.to_thread`), so a slow disk never stalls the event loop. A PostgreSQL sink
for a fleet is one more module implementing `AuditSink`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem

if TYPE_CHECKING:
    from ktproxy.audit.stats import Tally


@dataclass(frozen=True, slots=True)
class Query:
    """Filters of `kt audit query` and `GET /v1/kt/events`; all optional, ANDed."""

    since: float | None = None  # ts >= since
    until: float | None = None  # ts < until
    consumer: str | None = None
    model: str | None = None  # requested or upstream model
    target: str | None = None
    status: int | None = None
    # "blocked", "redacted" (any policy changed content), "none", a policy name or a
    # decision code (`prompt_injection.instruction_override`)
    decision: str | None = None
    streamed: bool | None = None
    request_id: str | None = None
    # `q` of the events API: a full 32-hex request id matches exactly, anything else
    # is a case-insensitive substring of the id (text that is not hex finds nothing).
    search: str | None = None
    limit: int = 100
    cursor: str | None = None  # from the previous page: records older than it


@dataclass(slots=True)
class Page:
    """One page of records, newest first, and the cursor of the next page (or None)."""

    records: list[AuditRecord] = field(default_factory=list)
    next_cursor: str | None = None


class HeadUnknown(Exception):
    """Raised by `AuditSink.head`: the sink cannot tell where a chain stands right now
    (its backend is away and it keeps no record of the chain aside), so records cannot
    be sealed onto it. The writer then starts a chain of its own (`audit/writer.py`)."""


class AuditSink(Protocol):
    """Where sealed audit records are kept."""

    def open(self) -> None:
        """Create what is missing (tables, directories); idempotent."""

    def head(self, chain: str) -> ChainHead:
        """The last sequence number and hash of `chain` (the genesis when empty);
        `HeadUnknown` when that cannot be known right now."""

    def write(self, rows: Sequence[tuple[AuditRecord, bytes]]) -> None:
        """Append sealed records `(record, stored bytes)` atomically, in order."""

    def query(self, query: Query) -> Page:
        """Records matching `query`, newest first."""

    def stats(self, query: Query, bucket_s: int) -> Tally:
        """The tally of the records matching `query` (cursor and limit aside; `since`
        and `until` required), in buckets of `bucket_s` seconds; see
        `ktproxy.audit.stats`."""

    def purge(self, before: float) -> int:
        """Delete records with `ts < before`, keeping each chain verifiable; the count."""

    def verify(self) -> Iterator[ChainProblem]:
        """Every break of every chain held by the sink."""

    def chains(self) -> dict[str, ChainHead]:
        """Each chain held by the sink and where it stands."""

    def close(self) -> None:
        """Release files and connections."""


def matches(record: AuditRecord, q: Query) -> bool:
    """`record` passes the filters of `q` (cursor and limit aside)."""
    if q.since is not None and record.ts < q.since:
        return False
    if q.until is not None and record.ts >= q.until:
        return False
    if q.consumer is not None and record.consumer != q.consumer:
        return False
    if q.model is not None and q.model not in (record.model, record.upstream_model):
        return False
    if q.target is not None and record.target != q.target:
        return False
    if q.status is not None and record.status != q.status:
        return False
    if q.streamed is not None and record.streamed != q.streamed:
        return False
    if q.request_id is not None and record.id != q.request_id:
        return False
    if q.search is not None:
        exact, needle = id_search(q.search)
        if record.id != needle if exact else needle not in record.id.lower():
            return False
    if q.decision is not None and not decision_matches(record, q.decision):
        return False
    return True


def id_search(text: str) -> tuple[bool, str]:
    """`(exact, needle)` of a request-id search: ids are 32 lowercase hex digits, so a
    full one is looked up by the id index and anything shorter is a substring."""
    needle = text.strip().lower()
    exact = len(needle) == 32 and all(c in "0123456789abcdef" for c in needle)
    return exact, needle


def decision_summary(record: AuditRecord) -> str:
    """`blocked`, `redacted` or `none`: the strongest thing the policies did."""
    if record.blocked:
        return "blocked"
    if any(d.counts and d.action != "log" for d in record.decisions):
        return "redacted"
    return "none"


def decision_matches(record: AuditRecord, wanted: str) -> bool:
    """The record's decisions match a summary, a policy name or a decision code."""
    if wanted in ("blocked", "redacted", "none"):
        return decision_summary(record) == wanted
    return any(wanted in (d.policy, d.code) for d in record.decisions)
