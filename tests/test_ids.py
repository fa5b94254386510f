"""Request ids: the format clients and log pipelines see, uniqueness, fresh per fork."""

from __future__ import annotations

import re
import subprocess
import sys

from ktproxy.ids import new_request_id


def test_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_draws_its_own_prefix() -> None:
    # In a fresh interpreter: forking this (threaded) test process would warn.
    script = (
        "import os\n"
        "from ktproxy.ids import new_request_id\n"
        "print(new_request_id(), flush=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print(new_request_id(), flush=True)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert len(out) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in out)
    assert out[0][:16] != out[1][:16]
