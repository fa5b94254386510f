"""Detector evaluation: PII/secret scanner recall and precision, prompt-injection rates.

    python -m benchmarks.eval_detectors [--seed 0] [--per-type 2000] [--lookalikes 5000]
                                        [--examples 5] [--json]

PII: every sentence of `benchmarks.corpora.pii_positives` is scanned with all kinds
selected (`ktproxy.scan.scan(text, ALL_KINDS, True, 0)`). A value counts as found
(*exact*) when a match of its kind spans exactly the value, and as *covered* when the
matches of any kinds together cover every character of it (it would be redacted).
Precision is the share of look-alike sentences with no match at all.

Injection: every prompt of `benchmarks.corpora.injection_attacks` / `injection_benign`
goes through `build_detector().is_attack(text)` of
`ktproxy.policies.prompt_injection`; sources whose packages are not installed are
listed as unavailable.

Targets (the project's issue): PII recall >= 99 % per structured type, precision
>= 98 % against look-alikes; injection >= 90 % of public attacks detected, <= 2 %
false positives on benign prompts. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from benchmarks import corpora

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # no C extension: we print which one runs
    from ktproxy import scan as kscan

TARGET_RECALL = 0.99
TARGET_PRECISION = 0.98
TARGET_DETECTION = 0.90
TARGET_FALSE_POSITIVES = 0.02

Match = tuple[int, int, int]


# -- helpers ----------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:6.2f} %"


def mark(ok: bool) -> str:
    return "ok" if ok else "BELOW"


def shape(value: str) -> str:
    """Digits -> 9, letters -> A/a, other characters kept; runs over 4 written `9{n}`."""
    classes = "".join(
        "9"
        if c.isdigit() and c.isascii()
        else "A"
        if "A" <= c <= "Z"
        else "a"
        if "a" <= c <= "z"
        else c
        for c in value
    )
    return re.sub(r"([9Aa])\1{4,}", lambda m: f"{m.group(1)}{{{len(m.group(0))}}}", classes)


def short(text: str, limit: int = 110) -> str:
    flat = text.replace("\n", "\\n").replace("\t", "\\t")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def covered(matches: list[Match], start: int, end: int) -> bool:
    """Do the matches together cover every character of [start, end)?"""
    pos = start
    for s, e, _ in sorted(matches):
        if s > pos:
            break
        pos = max(pos, e)
        if pos >= end:
            return True
    return pos >= end


def describe(text: str, matches: list[Match], start: int = 0, end: int | None = None) -> str:
    stop = len(text) if end is None else end
    found = [
        f"{kscan.KINDS[k]}:{short(text[s:e], 48)!r}"
        for s, e, k in matches
        if e > start and s < stop
    ]
    return ", ".join(found) if found else "no match"


# -- PII --------------------------------------------------------------------------------


def evaluate_pii(seed: int, per_type: int, n_lookalikes: int, examples: int) -> dict[str, Any]:
    started = time.perf_counter()
    positives = corpora.pii_positives(seed, per_type)
    lookalikes = corpora.pii_lookalikes_by_category(seed, n_lookalikes)
    generated = time.perf_counter() - started
    scan = kscan.scan
    mask = kscan.ALL_KINDS
    started = time.perf_counter()

    kinds: dict[str, Any] = {}
    for bucket, pairs in positives.items():
        kind = bucket.split(" ")[0]
        index = kscan.KIND_INDEX[kind]
        exact = cover = 0
        misses: dict[str, list[dict[str, str]]] = defaultdict(list)
        miss_counts: Counter[str] = Counter()
        for sentence, value in pairs:
            start = sentence.find(value)
            end = start + len(value)
            matches, _ = scan(sentence, mask, True, 0)
            hit = (start, end, index) in matches
            exact += hit
            cover += hit or covered(matches, start, end)
            if not hit:
                key = shape(value)
                miss_counts[key] += 1
                if len(misses[key]) < examples:
                    misses[key].append(
                        {
                            "value": value,
                            "sentence": short(sentence, 160),
                            "found": describe(sentence, matches, start, end),
                        }
                    )
        n = len(pairs)
        kinds[bucket] = {
            "positives": n,
            "recall_exact": exact / n if n else 0.0,
            "recall_covered": cover / n if n else 0.0,
            "reported_apart": bucket == corpora.FAKER_RAW_PHONE,
            "misses_by_shape": [
                {"shape": s, "count": c, "examples": misses[s]}
                for s, c in miss_counts.most_common()
            ],
        }

    categories: dict[str, Any] = {}
    clean_total = scored_total = 0
    for category, sentences in lookalikes.items():
        clean = 0
        hits_by_kind: Counter[str] = Counter()
        fps: list[dict[str, str]] = []
        for sentence in sentences:
            matches, _ = scan(sentence, mask, True, 0)
            if not matches:
                clean += 1
                continue
            hits_by_kind.update(kscan.KINDS[k] for _, _, k in matches)
            if len(fps) < examples:
                fps.append({"sentence": short(sentence, 160), "found": describe(sentence, matches)})
        apart = category == corpora.LOOKALIKE_APART
        if not apart:
            clean_total += clean
            scored_total += len(sentences)
        categories[category] = {
            "sentences": len(sentences),
            "precision": clean / len(sentences) if sentences else 1.0,
            "matched_as": dict(hits_by_kind.most_common()),
            "reported_apart": apart,
            "false_positives": fps,
        }
    return {
        "implementation": kscan.IMPLEMENTATION,
        "seed": seed,
        "per_type": per_type,
        "generate_seconds": round(generated, 2),
        "scan_seconds": round(time.perf_counter() - started, 2),
        "kinds": kinds,
        "precision": clean_total / scored_total if scored_total else 1.0,
        "lookalike_sentences": scored_total,
        "lookalikes": categories,
    }


def print_pii(result: dict[str, Any], examples: int) -> None:
    print(
        f"PII / secret scanner — implementation: {result['implementation']} "
        f"(seed {result['seed']}, {result['per_type']} per type; corpus "
        f"{result['generate_seconds']} s, scan {result['scan_seconds']} s)"
    )
    print(f"target: recall >= {pct(TARGET_RECALL).strip()} per structured type (exact)")
    print()
    print(f"  {'kind':<20} {'positives':>9} {'recall exact':>13} {'covered':>10}  target")
    for bucket, r in result["kinds"].items():
        verdict = "(apart)" if r["reported_apart"] else mark(r["recall_exact"] >= TARGET_RECALL)
        print(
            f"  {bucket:<20} {r['positives']:>9} {pct(r['recall_exact']):>13} "
            f"{pct(r['recall_covered']):>10}  {verdict}"
        )
    print()
    precision = result["precision"]
    print(
        f"  look-alike precision (sentences with no match): {pct(precision).strip()} over "
        f"{result['lookalike_sentences']} sentences — target >= {pct(TARGET_PRECISION).strip()}: "
        f"{mark(precision >= TARGET_PRECISION)}"
    )
    print(f"  {'category':<40} {'n':>5} {'precision':>10}  matched as")
    for category, r in result["lookalikes"].items():
        matched = ", ".join(f"{k} x{c}" for k, c in r["matched_as"].items()) or "-"
        name = category + (" [apart]" if r["reported_apart"] else "")
        print(f"  {name:<40} {r['sentences']:>5} {pct(r['precision']):>10}  {matched}")
    if examples <= 0:
        return
    print()
    print("  Misses (by value shape, most frequent first):")
    for bucket, r in result["kinds"].items():
        if not r["misses_by_shape"]:
            continue
        missed = sum(m["count"] for m in r["misses_by_shape"])
        print(f"  - {bucket}: {missed} missed")
        for m in r["misses_by_shape"][:examples]:
            print(f"      {m['count']:>5} x {short(m['shape'], 60)}")
            for ex in m["examples"][:2]:
                print(f"            {short(ex['value'], 70)!r} -> {ex['found']}")
    print()
    print("  Look-alike false positives:")
    for category, r in result["lookalikes"].items():
        for fp in r["false_positives"][: min(examples, 3)]:
            print(f"  - [{category}] {fp['sentence']!r} -> {fp['found']}")


# -- prompt injection -------------------------------------------------------------------


def load_detector() -> tuple[Callable[[str], bool] | None, str]:
    try:
        from ktproxy.policies.prompt_injection import build_detector

        detector = build_detector()
        is_attack: Callable[[str], bool] = detector.is_attack
    except (ImportError, AttributeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return is_attack, ""


def evaluate_injection(examples: int) -> dict[str, Any]:
    sources = [vars(s) for s in corpora.injection_sources()]
    is_attack, error = load_detector()
    result: dict[str, Any] = {"sources": sources, "available": is_attack is not None}
    if is_attack is None:
        result["error"] = error
        return result
    started = time.perf_counter()
    for role, pairs in (
        ("attack", corpora.injection_attacks()),
        ("benign", corpora.injection_benign()),
    ):
        flagged: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        failures: dict[str, list[str]] = defaultdict(list)  # missed attacks / false positives
        errors: list[str] = []
        for source, prompt in pairs:
            totals[source] += 1
            try:
                hit = bool(is_attack(prompt))
            except Exception as exc:  # a detector crash is a finding, not a stop
                errors.append(f"{source}: {type(exc).__name__}: {exc}")
                hit = False
            flagged[source] += hit
            wrong = hit != (role == "attack")
            if wrong and len(failures[source]) < examples:
                failures[source].append(short(prompt, 140))
        by_source = {
            s: {"count": totals[s], "flagged": flagged[s], "rate": flagged[s] / totals[s]}
            for s in totals
        }
        all_n = sum(totals.values())
        public_n = sum(c for s, c in totals.items() if s != corpora.HANDWRITTEN)
        public_flagged = sum(c for s, c in flagged.items() if s != corpora.HANDWRITTEN)
        result[role] = {
            "count": all_n,
            "flagged": sum(flagged.values()),
            "rate": sum(flagged.values()) / all_n if all_n else 0.0,
            "public_rate": public_flagged / public_n if public_n else 0.0,
            "by_source": by_source,
            "failures": dict(failures),
            "errors": errors[:20],
            "error_count": len(errors),
        }
    cases, info = corpora.injection_heldout()
    held: dict[str, Any] = {"source": vars(info), "by_family": {}}
    for family, text, attack in cases:
        row = held["by_family"].setdefault(family, {"attack": attack, "count": 0, "flagged": 0})
        row["count"] += 1
        row["flagged"] += bool(is_attack(text))
    result["heldout"] = held
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _package_rows(
    by_source: dict[str, Any],
) -> list[tuple[str, int, int, list[tuple[str, int, int]]]]:
    """Per package (source up to ':'), with its subsets."""
    grouped: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for source, r in by_source.items():
        package, _, subset = source.partition(":")
        grouped[package].append((subset, r["count"], r["flagged"]))
    rows = []
    for package, subsets in grouped.items():
        rows.append(
            (package, sum(c for _, c, _ in subsets), sum(f for _, _, f in subsets), subsets)
        )
    return rows


def print_injection(result: dict[str, Any], examples: int) -> None:
    print("Prompt-injection detector")
    print(
        f"targets: >= {pct(TARGET_DETECTION).strip()} of public attacks detected, "
        f"<= {pct(TARGET_FALSE_POSITIVES).strip()} false positives on benign prompts"
    )
    print()
    print("  Sources:")
    for s in result["sources"]:
        if s["error"]:
            print(f"  - {s['role']:<6} {s['source']:<28} unavailable: {s['error']}")
            continue
        origin = f"{s['package']} {s['version']}" if s["package"] else "(this repository)"
        print(
            f"  - {s['role']:<6} {s['source']:<28} {s['count']:>4} prompts  {origin}, "
            f"{s['path']}, {s['license']}"
        )
    print()
    if not result["available"]:
        print(f"  prompt-injection detector not available ({result['error']})")
        return
    for role, label, target in (
        ("attack", "detection rate", TARGET_DETECTION),
        ("benign", "false-positive rate", TARGET_FALSE_POSITIVES),
    ):

        def better(rate: float, role: str = role, target: float = target) -> bool:
            return rate >= target if role == "attack" else rate <= target

        r = result[role]
        print(f"  {role} prompts: {label}")
        print(f"  {'source':<48} {'n':>5} {'flagged':>8} {'rate':>9}")
        for package, n, flagged, subsets in _package_rows(r["by_source"]):
            print(f"  {package:<48} {n:>5} {flagged:>8} {pct(flagged / n):>9}")
            if len(subsets) > 1 or subsets[0][0]:
                for subset, sn, sf in subsets:
                    print(f"    {subset:<46} {sn:>5} {sf:>8} {pct(sf / sn):>9}")
        overall = r["public_rate"]
        scope = "public" if role == "attack" else "registry benign sets"
        print(
            f"  all {scope}: {pct(overall).strip()} — target {'>=' if role == 'attack' else '<='} "
            f"{pct(target).strip()}: {mark(better(overall))}"
        )
        if role == "benign":
            print(
                f"  all benign incl. {corpora.HANDWRITTEN}: {pct(r['rate']).strip()} — "
                f"{mark(better(r['rate']))}"
            )
        if r["error_count"]:
            print(f"  detector raised on {r['error_count']} prompts, e.g. {r['errors'][0]}")
        print()
    held = result.get("heldout")
    if held is not None:
        info = held["source"]
        print("  held out (never used while writing the rules; not counted above):")
        if info["error"]:
            print(f"  {info['source']}: unavailable: {info['error']}")
        else:
            print(f"  {info['source']} {info['version']}, {info['path']}, {info['license']}")
            totals = {True: [0, 0], False: [0, 0]}
            for family, row in sorted(held["by_family"].items()):
                kind = "attack" if row["attack"] else "benign"
                totals[row["attack"]][0] += row["count"]
                totals[row["attack"]][1] += row["flagged"]
                print(f"    {family:<30} {kind:<7} {row['count']:>4} {row['flagged']:>8}")
            for attack, label in ((True, "attacks detected"), (False, "benign flagged")):
                n, f = totals[attack]
                if n:
                    print(f"  held-out {label}: {f}/{n} = {pct(f / n).strip()}")
        print()
    if examples > 0:
        for role, title in (("attack", "Missed attacks"), ("benign", "False positives")):
            print(f"  {title}:")
            for source, items in sorted(result[role]["failures"].items()):
                for item in items[: min(examples, 3)]:
                    print(f"  - [{source}] {item!r}")
            print()
    print(f"  ({result['seconds']} s)")


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-type", type=int, default=2000, help="positives per PII kind")
    parser.add_argument("--lookalikes", type=int, default=5000, help="look-alike sentences")
    parser.add_argument("--examples", type=int, default=5, help="failure examples per group")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)

    pii = evaluate_pii(args.seed, args.per_type, args.lookalikes, args.examples)
    injection = evaluate_injection(args.examples)
    if args.json:
        targets = {
            "pii_recall": TARGET_RECALL,
            "pii_precision": TARGET_PRECISION,
            "injection_detection": TARGET_DETECTION,
            "injection_false_positives": TARGET_FALSE_POSITIVES,
        }
        out = {"targets": targets, "pii": pii, "injection": injection}
        json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    print_pii(pii, args.examples)
    print()
    print_injection(injection, args.examples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
