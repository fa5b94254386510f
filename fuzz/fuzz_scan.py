"""Differential fuzzing of the scanner: C extension against the pure-Python reference.

atheris instruments the reference (the C code mirrors its structure, so the
reference's coverage is a good guide to the C code's paths) and every input is
checked three ways: C == Python; the stream redactor fed the text in fuzzer-chosen
pieces equals whole-text redaction; the C normaliser and the Python fast path equal
the reference normaliser, offsets included. Any difference or exception is a crash
that atheris saves.

    python fuzz/fuzz_scan.py -max_total_time=20        # a bounded run (CI)
    python fuzz/fuzz_scan.py -runs=1 fuzz/crashes/*    # replay saved inputs
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ktproxy.scan"]):
    from ktproxy.scan import redactor as redactor_module
    from ktproxy.scan import reference
    from ktproxy.scan.kinds import ALL_KINDS, KINDS
    from ktproxy.scan.normalizer import normalize_py, normalize_with_offsets_py

from ktproxy import _ktscan

SEEDS = (
    "john.doe@example.com +44 20 7946 0958 4111 1111 1111 1111 123-45-6789 "
    "192.168.1.20 2001:db8::1 DE89 3704 0044 0532 0130 00 sk-proj-"
)


def tag(value: str, kind: int) -> str:
    return f"[{KINDS[kind]}]"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mask = fdp.ConsumeIntInRange(0, ALL_KINDS)
    final = fdp.ConsumeBool()
    cuts = [fdp.ConsumeIntInRange(1, 12) for _ in range(fdp.ConsumeIntInRange(1, 6))]
    prefix_len = fdp.ConsumeIntInRange(0, len(SEEDS))
    text = SEEDS[:prefix_len] + fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    start = min(len(text), cuts[0] - 1)

    expected = reference.scan(text, mask, final, start)
    got = _ktscan.scan(text, mask, final, start)
    if got != expected:
        raise AssertionError(f"C {got!r} != Python {expected!r} for {text!r} {mask} {final}")

    redactor_module.scan = reference.scan  # the stream check runs on the reference
    r = redactor_module.StreamRedactor(mask, tag, max_hold=1 << 20)
    out, i, k = [], 0, 0
    while i < len(text):
        out.append(r.feed(text[i : i + cuts[k % len(cuts)]]))
        i += cuts[k % len(cuts)]
        k += 1
    out.append(r.flush())
    whole = redactor_module.redact_text(text, mask, tag)
    if "".join(out) != whole:
        raise AssertionError(f"stream {''.join(out)!r} != whole {whole!r} for {text!r}")

    reference_norm = normalize_with_offsets_py(text)
    if _ktscan.normalize_with_offsets(text) != reference_norm:
        raise AssertionError(f"C normaliser differs for {text!r}")
    if _ktscan.normalize(text) != reference_norm[0] or normalize_py(text) != reference_norm[0]:
        raise AssertionError(f"normalize differs from normalize_with_offsets for {text!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
