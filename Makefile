VENV := .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export BENTOML_DO_NOT_TRACK := true

.PHONY: setup setup-serve browser test test-all serve train lint bench wheel clean

setup: $(DEV_STAMP)
setup-serve: $(SERVE_STAMP)

# torch first, pinned: pip takes the local CPU build for that pin; unpinned pulls multi-GB CUDA.
# `make serve` installs only what serving needs; `make test` adds the dev tools and Ray.
$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(SERVE_STAMP)
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(DEV_STAMP)

test: setup
	$(VENV)/bin/pytest

# the page's browser test needs Debian's chromium and its driver (root or sudo)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver)

# the long runs: 20,000-request load test, 1,000+ fuzzed cases, full reproductions, browser
test-all: setup browser
	TROPES_LOAD_FULL=1 TROPES_FUZZ_EXAMPLES=400 $(VENV)/bin/pytest -m '' -s

serve: setup-serve
	$(VENV)/bin/tropes serve --host 127.0.0.1 --port 3000

train: setup
	$(VENV)/bin/tropes --precision bf16 train --no-cache  # as the shipped model was trained

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/run_all.py

wheel: setup
	$(PY) -m build --wheel --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) .cache dist build
