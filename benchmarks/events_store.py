"""The events API's reads on a large SQLite audit store: pages, filters, search, stats.

Builds a SQLite store of `--records` records (default 1,000,000) through the sink's own
write path (sealed records, batches of 10,000), seeded and realistic: four gateway
instances (chains) with request ids as `ktproxy.ids` makes them, seven days of traffic
ending now, a dozen consumers, six models, about 3 % blocked (by two policies and
several codes), 15 % redacted, 2 % failed, 35 % streamed, log-normal latencies. A
10,000-record store built the same way in the same run is the reference: every figure
is printed with its ratio to the same query there, since absolute times drift with
the machine.

Each figure is the median of `--repeat` runs of what the API does for it (the sink
query, or the stats tally and its finishing in Python), on a warm page cache.

    python -m benchmarks.events_store [--records 1000000] [--repeat 5] [--seed 9]
                                      [--dir PATH] [--json]

`--dir` keeps the stores there (and reuses a store already built with the same size
and seed), so a second run skips the build.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ktproxy.audit.record import AuditRecord, ChainHead, PolicyDecision, Usage, seal
from ktproxy.audit.sink import Query
from ktproxy.audit.sqlite_sink import SQLiteSink
from ktproxy.audit.stats import choose_bucket, finish
from ktproxy.audit.store import stats_sinks

REFERENCE = 10_000
DAYS = 7
INSTANCES = 4
CONSUMERS = [None, "default", "team-a", "team-b", "web", "mobile", "batch", "search",
             "support", "billing", "ml", "ops", "qa"]  # fmt: skip
CONSUMER_WEIGHTS = [2, 20, 15, 12, 10, 9, 8, 6, 5, 4, 4, 3, 2]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.0-flash", "llama-3.1-70b",
          "mock-model"]  # fmt: skip
MODEL_WEIGHTS = [35, 30, 15, 10, 7, 3]
BLOCKS = [("prompt-injection", "prompt_injection.instruction_override"),
          ("prompt-injection", "prompt_injection.role_play"),
          ("prompt-injection", "prompt_injection.system_prompt_leak"),
          ("deny-list", "deny_list.competitor")]  # fmt: skip
BATCH = 10_000


def _build(path: Path, n: int, seed: int, now: float) -> float:
    """Write `n` records to a new store at `path`; seconds it took."""
    started = time.perf_counter()
    rng = random.Random(seed)
    sink = SQLiteSink(path)
    sink.open()
    prefixes = [rng.randbytes(8).hex() for _ in range(INSTANCES)]
    counters = [rng.getrandbits(32) for _ in range(INSTANCES)]
    heads = [ChainHead() for _ in range(INSTANCES)]
    span = DAYS * 86400.0
    # Arrival times: sorted uniform over the span, so each chain is in time order.
    times = sorted(now - span + rng.random() * span for _ in range(n))
    batches: list[list[tuple[AuditRecord, bytes]]] = [[] for _ in range(INSTANCES)]
    for ts in times:
        c = rng.randrange(INSTANCES)
        counters[c] += 1
        record = _record(rng, f"{prefixes[c]}{counters[c] & 0xFFFFFFFFFFFFFFFF:016x}", ts)
        sealed, data = seal(record, f"gw-{c}", heads[c].seq + 1, heads[c].hash)
        heads[c] = ChainHead(sealed.seq, sealed.hash)
        batches[c].append((sealed, data))
        if len(batches[c]) >= BATCH:
            sink.write(batches[c])
            batches[c] = []
    for batch in batches:
        if batch:
            sink.write(batch)
    sink.close()
    return time.perf_counter() - started


def _record(rng: random.Random, rid: str, ts: float) -> AuditRecord:
    consumer = rng.choices(CONSUMERS, CONSUMER_WEIGHTS)[0]
    model = rng.choices(MODELS, MODEL_WEIGHTS)[0]
    streamed = rng.random() < 0.35
    decisions: list[PolicyDecision] = []
    status: int | None = 200
    error = None
    roll = rng.random()
    if roll < 0.03:
        policy, code = rng.choice(BLOCKS)
        decisions = [PolicyDecision(policy, "block", code)]
        status = 422
    elif roll < 0.18:
        decisions.append(PolicyDecision("pii-detector", "redact", None, {"EMAIL": 1}))
    elif roll < 0.2:
        status = rng.choice([429, 502, 502, 504])
        error = "upstream"
    latency = rng.lognormvariate(math.log(900 if streamed else 450), 0.8)
    usage = Usage(rng.randint(20, 2000), rng.randint(1, 800), None)
    usage = Usage(usage.prompt_tokens, usage.completion_tokens,
                  (usage.prompt_tokens or 0) + (usage.completion_tokens or 0))  # fmt: skip
    return AuditRecord(
        id=rid, ts=ts, endpoint="/v1/chat/completions", model=model, streamed=streamed,
        status=status, error=error, consumer=consumer, target="primary", provider="openai",
        upstream_model=model, latency_ms=latency if status != 422 else 0.4,
        upstream_ms=latency * 0.8 if status != 422 else None,
        ttft_ms=latency * 0.2 if streamed else None,
        usage=usage if status == 200 else None, decisions=decisions,
    )  # fmt: skip


def _store(directory: Path, n: int, seed: int, now: float) -> tuple[SQLiteSink, float, float]:
    """The store of `n` records (built, or reused from `directory`); its end time."""
    path = directory / f"events-{n}-{seed}.db"
    meta = path.with_suffix(".json")
    built = 0.0
    if not (path.exists() and meta.exists()):
        path.unlink(missing_ok=True)
        built = _build(path, n, seed, now)
        meta.write_text(json.dumps({"now": now}))
    sink = SQLiteSink(path)
    sink.open()
    return sink, float(json.loads(meta.read_text())["now"]), built


def _median(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: the page cache and SQLite's statement cache
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def _cases(sink: SQLiteSink, now: float) -> dict[str, Callable[[], object]]:
    """The timed reads, as the admin API runs them."""
    first = sink.query(Query(limit=50))
    cursor = first.next_cursor
    for _ in range(19):  # the cursor of page 21
        cursor = sink.query(Query(limit=50, cursor=cursor)).next_cursor
    middle = sink.query(Query(until=now - DAYS * 43200, limit=1)).records[0].id
    # The last 8 digits of an id (its counter's): one match, half the store away, so
    # the search reads the id of every newer record (the worst case of a substring).
    rare = middle[-8:]

    def stats(window: float) -> Callable[[], object]:
        def run() -> object:
            since = now - window
            bucket = choose_bucket(since, now)
            q = Query(since=since, until=now)
            return finish(stats_sinks([sink], q, bucket), since, now, bucket)

        return run

    return {
        "first page (limit 50)": lambda: sink.query(Query(limit=50)),
        "page 21 (20 cursors deep)": lambda: sink.query(Query(limit=50, cursor=cursor)),
        "consumer=team-b": lambda: sink.query(Query(consumer="team-b", limit=50)),
        "decision=blocked": lambda: sink.query(Query(decision="blocked", limit=50)),
        "decision=deny_list.competitor": lambda: sink.query(
            Query(decision="deny_list.competitor", limit=50)
        ),
        "streamed=true": lambda: sink.query(Query(streamed=True, limit=50)),
        "status=504": lambda: sink.query(Query(status=504, limit=50)),
        "q=<full id>": lambda: sink.query(Query(search=middle, limit=50)),
        "q=<last 8 digits>": lambda: sink.query(Query(search=rare, limit=50)),
        "stats 1h": stats(3600),
        "stats 24h": stats(86400),
        "stats 7d": stats(DAYS * 86400),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the store")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median kept)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) stores here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        parser.error("--records and --repeat must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        big, big_now, big_build = _store(directory, args.records, args.seed, now)
        ref, ref_now, _ = _store(directory, min(REFERENCE, args.records), args.seed, now)
        try:
            big_cases, ref_cases = _cases(big, big_now), _cases(ref, ref_now)
            figures: dict[str, Any] = {}
            for name, fn in big_cases.items():
                seconds = _median(fn, args.repeat)
                reference = _median(ref_cases[name], args.repeat)
                figures[name] = {
                    "ms": round(seconds * 1e3, 3),
                    "reference_ms": round(reference * 1e3, 3),
                    "ratio": round(seconds / reference, 2) if reference > 0 else None,
                }
        finally:
            big.close()
            ref.close()
    report = {
        "records": args.records,
        "reference_records": min(REFERENCE, args.records),
        "build_s": round(big_build, 1),
        "repeat": args.repeat,
        "figures": figures,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"store: {args.records:,} records (reference: {report['reference_records']:,})"
          + (f", built in {big_build:.1f} s" if big_build else ", reused"))  # fmt: skip
    print(f"{'query':32} {'ms':>10} {'ref ms':>10} {'ratio':>8}")
    for name, f in figures.items():
        print(f"{name:32} {f['ms']:10.3f} {f['reference_ms']:10.3f} {f['ratio'] or 0:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
