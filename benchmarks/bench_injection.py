"""The prompt-injection detector on hostile text: does its cost stay linear?

A request body is scanned on the event loop, so a text that makes the detector do
more than linear work is a denial of service: once, a megabyte of
"ignore previous instructions" took minutes. This benchmark scans texts of each
shape at two sizes and prints

- the cost per KiB of each shape against ordinary English prose of the same size
  (the reference, same run), and
- the growth: cost per KiB at the large size over cost per KiB at the small size,
  which stays near 1 when the work is linear and grows with the size when it is not.

    python -m benchmarks.bench_injection [--small 65536] [--large 1048576] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random

from benchmarks.bench_scan import best_time
from ktproxy.scan.injection import InjectionDetector

PROSE = (
    "the quarterly report shows steady growth in every region and the team plans to "
    "review the budget next week before the board meeting on thursday"
).split()

# Each shape: words drawn at random, joined by spaces.
SHAPES: dict[str, list[str]] = {
    "prose (reference)": PROSE,
    "dense override phrases": "ignore previous instructions and".split(),
    "anchor words only": ["ignore"],
    "overrides among prose": [*PROSE, "ignore", "previous", "instructions"],
    "allowed phrase repeated": "please ignore the noise".split(),
}


def make_text(words: list[str], size: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=65536, help="characters, small text")
    parser.add_argument("--large", type=int, default=1048576, help="characters, large text")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    detector = InjectionDetector(allow_phrases=("ignore the noise",))
    detector.findings("warm up")
    rows = []
    per_kib: dict[tuple[str, int], float] = {}
    for name, words in SHAPES.items():
        for size in (args.small, args.large):
            text = make_text(words, size, args.seed)
            seconds = best_time(lambda t=text: detector.findings(t), args.repeat)  # type: ignore[misc]
            per_kib[name, size] = seconds / (size / 1024) * 1e6
    reference = "prose (reference)"
    for name in SHAPES:
        small, large = per_kib[name, args.small], per_kib[name, args.large]
        rows.append(
            {
                "shape": name,
                "us_per_kib_small": round(small, 1),
                "us_per_kib_large": round(large, 1),
                "vs_prose": round(large / per_kib[reference, args.large], 2),
                "growth": round(large / small, 2),
            }
        )
    if args.json:
        print(json.dumps({"small": args.small, "large": args.large, "rows": rows}))
        return 0
    print(f"prompt-injection detector, {args.small:,} and {args.large:,} characters")
    print(f"{'shape':28} {'µs/KiB small':>13} {'µs/KiB large':>13} {'vs prose':>9} {'growth':>7}")
    for r in rows:
        print(
            f"{r['shape']:28} {r['us_per_kib_small']:13,.1f} {r['us_per_kib_large']:13,.1f}"
            f" {r['vs_prose']:8.2f}x {r['growth']:6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
