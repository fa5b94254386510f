"""The audit record of one exchange, and the hash chain that links records.

A record says who sent what where, what the policies decided and how long it took;
never a redacted value, and content only when the config asks for it (then only
after redaction). Each record carries the hash of the record before it in its
chain (one chain per gateway instance and sink), so an edited or deleted record
breaks the chain at that point: `verify_chain` finds where.

The hash is sha256 over the record's canonical JSON (msgspec, keys sorted) with
`hash` left empty. Canonical bytes are stored as written, so a verifier recomputes
the hash from exactly what was hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec

GENESIS = "0" * 64  # prev_hash of the first record of a chain


class PolicyDecision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one policy decided: counts by kind, never the values."""

    policy: str
    action: str
    code: str | None = None
    counts: dict[str, int] = {}


class Usage(msgspec.Struct, frozen=True):
    """Token usage as the provider reported it."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class UpstreamAttempt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One call to one target (retries and fallbacks make several)."""

    target: str
    outcome: str  # ok, client_error, 5xx, 429, connect, timeout
    status: int | None = None
    ms: float | None = None


class Content(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Stored content (only with `store_content: redacted`): after redaction."""

    request: list[dict[str, object]] | None = None  # the messages as sent upstream
    response: str | None = None  # the assistant text as the client received it


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One exchange. `chain`, `seq`, `prev_hash` and `hash` are set by the writer."""

    id: str
    ts: float  # request start, seconds since the epoch
    endpoint: str
    model: str  # as the client asked for it
    streamed: bool
    status: int | None = None
    error: str | None = None
    consumer: str | None = None
    target: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    latency_ms: float | None = None  # gateway: request start to last byte sent
    upstream_ms: float | None = None  # upstream: request sent to response headers
    ttft_ms: float | None = None  # request start to the first streamed byte
    usage: Usage | None = None
    decisions: list[PolicyDecision] = []
    attempts: list[UpstreamAttempt] = []
    content: Content | None = None
    chain: str = ""
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    @property
    def blocked(self) -> bool:
        """True when a policy stopped the exchange."""
        return any(d.action == "block" for d in self.decisions)


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(AuditRecord)


def canonical(record: AuditRecord) -> bytes:
    """The bytes that are hashed: canonical JSON with `hash` empty."""
    return _encoder.encode(msgspec.structs.replace(record, hash=""))


def seal(record: AuditRecord, chain: str, seq: int, prev_hash: str) -> tuple[AuditRecord, bytes]:
    """`record` placed in `chain` at `seq` after `prev_hash`: (sealed record, stored bytes)."""
    placed = msgspec.structs.replace(record, chain=chain, seq=seq, prev_hash=prev_hash, hash="")
    body = _encoder.encode(placed)
    digest = hashlib.sha256(body).hexdigest()
    sealed = msgspec.structs.replace(placed, hash=digest)
    return sealed, _encoder.encode(sealed)


def decode(data: bytes | str) -> AuditRecord:
    """A stored record back from its JSON."""
    return _decoder.decode(data)


def encode(record: AuditRecord) -> bytes:
    """A record as stored (canonical JSON, hash included)."""
    return _encoder.encode(record)


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where a chain is broken, and how."""

    chain: str
    seq: int
    problem: str


@dataclass(slots=True)
class ChainHead:
    """Where a chain stands: its last sequence number and hash."""

    seq: int = 0
    hash: str = GENESIS


def verify_chain(
    chain: str, stored: Iterable[bytes], anchor: ChainHead | None = None
) -> Iterator[ChainProblem]:
    """Problems in one chain, given its stored records in sequence order.

    `anchor` is where the chain stood before its oldest kept record (records purged
    by retention leave one); without it the chain must start at the genesis.
    """
    expected = anchor or ChainHead()
    for data in stored:
        try:
            record = decode(data)
        except msgspec.DecodeError as exc:
            yield ChainProblem(chain, expected.seq + 1, f"unreadable record: {exc}")
            expected = ChainHead(expected.seq + 1, "")
            continue
        if record.seq != expected.seq + 1:
            yield ChainProblem(
                chain,
                record.seq,
                f"records {expected.seq + 1}..{record.seq - 1} are missing"
                if record.seq > expected.seq + 1
                else f"sequence goes back from {expected.seq} to {record.seq}",
            )
        elif expected.hash and record.prev_hash != expected.hash:
            yield ChainProblem(chain, record.seq, "does not link to the record before it")
        digest = hashlib.sha256(canonical(record)).hexdigest()
        if digest != record.hash:
            yield ChainProblem(chain, record.seq, "content does not match its hash (edited)")
        expected = ChainHead(record.seq, record.hash)
