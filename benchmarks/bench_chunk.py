"""Per-chunk policy latency on the streaming hot path.

Feeds a realistic stream of `chat.completion.chunk` events (token-sized deltas,
about 4 characters, text with ~1 % PII) through `StreamRewriter` with the default
chain's stream filter (`pii-detector`, redact) and times every event. The same run
times the reference steps so the figures can be read as ratios on a noisy machine:
decoding the event alone (msgspec `ChunkView`) and a chain without stream filters.

    python -m benchmarks.bench_chunk [--events 50000] [--json]

DESIGN §7 target: median <= 2 us, p99 <= 10 us per chunk of <= 64 bytes of text.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

import orjson

from ktproxy import scan
from ktproxy.api.stream_rewriter import StreamRewriter
from ktproxy.context import RequestContext
from ktproxy.policies.chain import EMPTY_CHAIN, CompiledChain
from ktproxy.policies.pii_detector import PIIDetector, PIIOptions
from ktproxy.wire.openai import chunk_decoder

WORDS = (
    "the gateway streams tokens to the client while policies check every delta and "
    "nothing sensitive should ever leave in the clear when a model repeats data"
).split()
PII = ["john.doe@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "192.168.10.4"]


def make_text(chars: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(PII) if rng.random() < 0.01 else rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def make_events(text: str, piece: int = 4) -> list[bytes]:
    events = []
    for i in range(0, len(text), piece):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": text[i : i + piece]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    return events


def time_each(events: list[bytes], step: Callable[[bytes], object]) -> list[float]:
    """Nanoseconds per event."""
    out = []
    clock = time.perf_counter_ns
    for event in events:
        t0 = clock()
        step(event)
        out.append(clock() - t0)
    return out


def summary(ns: list[float]) -> dict[str, float]:
    ordered = sorted(ns)
    return {
        "median_us": statistics.median(ordered) / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
    }


def run(events_count: int) -> dict[str, object]:
    text = make_text(events_count * 4)
    events = make_events(text)[:events_count]
    ctx = RequestContext("bench", "chat.completions", b"{}", "gpt-4o", True)
    pii = CompiledChain([PIIDetector(PIIOptions())])

    def decode_only(event: bytes) -> object:
        return chunk_decoder.decode(event[6:-2])

    results: dict[str, object] = {"scanner": scan.IMPLEMENTATION, "events": len(events)}
    for name, make in (
        ("decode only (reference)", None),
        ("rewriter, no filter", lambda: StreamRewriter(EMPTY_CHAIN, ctx)),
        ("default chain (pii-detector)", lambda: StreamRewriter(pii, ctx)),
        # A fresh chain's first stream is one of the 1 in 8 whose filter calls are
        # timed for /metrics (the first 256 of them).
        (
            "default chain, a timed stream",
            lambda: StreamRewriter(CompiledChain([PIIDetector(PIIOptions())]), ctx),
        ),
    ):
        # Warm up, then time; one fresh rewriter per pass.
        for _ in range(2):
            step: Callable[[bytes], object]
            if make is None:
                step = decode_only
            else:
                rewriter = make()
                step = rewriter.feed
            ns = time_each(events, step)
        results[name] = summary(ns)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.events)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"per-chunk latency, {results['events']} events of ~4 characters, "
        f"scanner: {results['scanner']}"
    )
    base = results["decode only (reference)"]
    assert isinstance(base, dict)
    for name, value in results.items():
        if isinstance(value, dict):
            ratio = value["median_us"] / base["median_us"]
            print(
                f"  {name:32s} median {value['median_us']:6.2f} us  p99 "
                f"{value['p99_us']:6.2f} us  ({ratio:4.1f}x decode)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
