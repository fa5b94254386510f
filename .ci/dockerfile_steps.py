"""The Dockerfile's build steps, run as a script (CI has no Docker engine).

Reads `Dockerfile` and carries out what its stages do, in a temporary directory
standing in for the image's filesystem:

1. build stage: its `COPY`s into `src/`, then its `pip wheel` command (with
   `CI=true`, so a failed C extension build fails here as it fails the image);
2. runtime stage: a fresh virtualenv standing in for the slim image, its
   `pip install` of the wheels, its `COPY` of the example config;
3. the image's `ENTRYPOINT` + `CMD` started (on a free loopback port instead of
   0.0.0.0:41002), its `HEALTHCHECK` command run against it, one chat completion,
   then SIGTERM: the process must exit 0.

Steps it cannot carry out (apt-get, useradd) are listed and skipped; any other
Dockerfile instruction it does not know fails the run, so a changed Dockerfile is
noticed here rather than at the first real image build.

    python .ci/dockerfile_steps.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIPPED = ("apt-get", "useradd")  # system packages and users: the host has its own


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str] | str, **kw: object) -> None:
    print("+", cmd if isinstance(cmd, str) else shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="kt-docker-steps-"))
    try:
        return carry_out(instructions(REPO / "Dockerfile"), root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def carry_out(steps: list[tuple[str, str]], root: Path) -> int:
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    if len(stages) != 2:
        raise SystemExit(f"expected a build and a runtime stage; found {len(stages)} FROM")
    src, wheels, etc, home = root / "src", root / "wheels", root / "etc", root / "home"
    for d in (src, wheels, etc, home):
        d.mkdir()
    venv = root / "runtime"
    run([sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    paths = {"/wheels": str(wheels), "/src": str(src), "/etc/ktproxy": str(etc)}

    def local(path: str) -> str:
        for image, host in paths.items():
            if path.startswith(image):
                return host + path[len(image) :]
        return path

    entry: list[str] = []
    cmd: list[str] = []
    health: list[str] = []
    workdir = src
    for index, (word, rest) in enumerate(steps):
        stage = 0 if index < stages[1] else 1
        if word in ("FROM", "EXPOSE", "USER", "ENV", "ARG", "LABEL"):
            continue
        if word == "WORKDIR":
            workdir = src if stage == 0 else home
        elif word == "COPY":
            parts = shlex.split(rest)
            if parts[0].startswith("--from="):
                continue  # the wheels are already where the runtime stage looks
            *sources, dest = parts
            target = Path(local(dest)) if dest.startswith("/") else workdir / dest
            for source in sources:
                origin = REPO / source
                to = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
                if origin.is_dir():
                    shutil.copytree(origin, to, dirs_exist_ok=True)
                else:
                    to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, to)
        elif word == "RUN":
            if any(tool in rest for tool in SKIPPED):
                print(f"- skipped (system step): RUN {rest}", flush=True)
                continue
            command = rest
            for image, host in paths.items():  # the image's paths, in the stand-in
                command = command.replace(image, host)
            command = command.replace("pip ", f"{bin_dir / 'python'} -m pip ", 1)
            run(command, shell=True, cwd=workdir, env=env)
        elif word == "HEALTHCHECK":
            health = json.loads(rest[rest.index("CMD") + 3 :])
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        else:
            raise SystemExit(f"Dockerfile instruction not handled here: {word} {rest}")
    return start_image(entry, [local(a) for a in cmd], health, bin_dir, env, home)


def check_console(port: str) -> None:
    """The console's page and every asset it names are served from the installed wheel."""
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/console", timeout=10) as response:
        page = response.read().decode()
    assets = sorted(set(re.findall(r'(/console/static/[^"\'?#]+(?:\?[^"\'#]*)?)', page)))
    assert assets, "the console page names no assets"
    for asset in assets:
        with urllib.request.urlopen(base + asset, timeout=10) as response:
            assert response.status == 200 and response.read(), asset
    print(f"console served ({len(assets)} assets)", flush=True)


def start_image(
    entry: list[str], cmd: list[str], health: list[str], bin_dir: Path,
    env: dict[str, str], home: Path,
) -> int:  # fmt: skip
    port = str(free_port())
    cmd = ["127.0.0.1" if a == "0.0.0.0" else port if a == "41002" else a for a in cmd]
    argv = [str(bin_dir / entry[0]), *entry[1:], *cmd]
    print("+", shlex.join(argv), flush=True)
    proc = subprocess.Popen(argv, cwd=home, env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        check = [str(bin_dir / health[0]), *(a.replace("41002", port) for a in health[1:])]
        deadline = time.monotonic() + 30
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the image's HEALTHCHECK never passed")
            time.sleep(0.3)
        print("HEALTHCHECK passed", flush=True)
        body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
        assert reply["choices"][0]["message"]["content"] == "hi", reply
        print("completion served", flush=True)
        check_console(port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    if code != 0:
        raise SystemExit(f"the gateway exited with {code} on SIGTERM")
    print("docker steps: OK", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
