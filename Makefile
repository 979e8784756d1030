VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export BENTOML_DO_NOT_TRACK := true

.PHONY: setup test test-all serve train lint bench clean

setup: $(STAMP)

# torch first, pinned: pip takes the local CPU build for that pin; unpinned pulls multi-GB CUDA.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

test: setup
	$(VENV)/bin/pytest

# the long runs: 20,000-request load test and 1,000+ fuzzed cases
test-all: setup
	TROPES_LOAD_FULL=1 TROPES_FUZZ_EXAMPLES=400 $(VENV)/bin/pytest -m '' -s

serve: setup
	$(VENV)/bin/tropes serve --host 127.0.0.1 --port 3000

train: setup
	$(VENV)/bin/tropes --precision fp32 train --no-cache

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .cache
