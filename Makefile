# make run: start the bot (the local playground when DISCORD_TOKEN is unset)
# make test: run the whole test suite (what CI runs)
# make test-fast: only the unit lane: no speech model, no sandbox (about a minute)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKERS ?= 3

# The lanes (tests/support/lanes.py): every test runs on $(WORKERS) workers, except those marked voice (the sandbox's
# voice, paced in real time) or timing (event-loop lag, deadlines), which run afterwards one at a time, alone.
PYTEST := $(PY) -m pytest -q
PARALLEL := -n $(WORKERS) -m "not (voice or timing)"
SERIAL := -m "voice or timing"

.PHONY: run test test-fast lint bench playground doctor index clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-deps: $(PY) requirements.txt constraints.txt
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.run-deps requirements-dev.txt requirements-engine.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-engine.txt
	touch $@

run: $(VENV)/.run-deps
	$(PY) main.py

playground: $(VENV)/.run-deps
	$(PY) main.py playground

doctor: $(VENV)/.run-deps
	$(PY) main.py doctor

index: $(VENV)/.run-deps
	$(PY) main.py index

# Both parts run even when the first fails; exit status 5 is pytest's "no test selected".
test: $(VENV)/.dev-deps
	status=0; \
	$(PYTEST) $(PARALLEL) || status=$$?; \
	$(PYTEST) $(SERIAL) || status=$$?; \
	exit $$status

test-fast: $(VENV)/.dev-deps
	status=0; \
	$(PYTEST) -n $(WORKERS) -m "unit and not timing" || status=$$?; \
	$(PYTEST) -m "unit and timing" || [ $$? -eq 5 ] || status=1; \
	exit $$status

lint: $(VENV)/.dev-deps
	$(PY) -m ruff check .

bench: $(VENV)/.dev-deps
	$(PY) -m bench.bench_index
	$(PY) -m bench.bench_chat

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
