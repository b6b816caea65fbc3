# `make run` and `make test` set up everything they need in .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The pinned release is a small CPU build where pip finds one first (these machines); from plain PyPI
# on Linux it is the multi-GB CUDA build. TORCH=torch takes the newest build for your platform.
TORCH  ?= torch==2.13.0
N_TRIALS ?= 30

.PHONY: install run test lint check clean chromium bench bench-quick

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: install
	$(BIN)/python studies/japanese_vowels.py --n-trials $(N_TRIALS) --seed 0

test: install chromium
	$(BIN)/python -m pytest -q

# Headless Chromium (Debian package) for the dashboard's browser test. Installed when missing and we
# are root (as in CI on a fresh machine); otherwise the test is skipped (or fails in CI).
chromium:
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	@test -x /usr/bin/chromium || echo "note: /usr/bin/chromium missing; the browser test will be skipped"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy optuna_rnn benchmarks

check: lint test

# Benchmarks: the full run (about 3.5 hours on 2 cores) rewrites benchmarks/RESULTS.md;
# the quick smoke run (under 3 minutes) writes benchmarks/quick/RESULTS.md.
bench: install
	$(BIN)/python -m benchmarks

bench-quick: install
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
