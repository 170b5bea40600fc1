# make run: start the bot (the local playground when DISCORD_TOKEN is unset)
# make test: run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench playground doctor index clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-deps: $(PY) requirements.txt constraints.txt
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.run-deps requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.run-deps
	$(PY) main.py

playground: $(VENV)/.run-deps
	$(PY) main.py playground

doctor: $(VENV)/.run-deps
	$(PY) main.py doctor

index: $(VENV)/.run-deps
	$(PY) main.py index

test: $(VENV)/.dev-deps
	$(PY) -m pytest -q

lint: $(VENV)/.dev-deps
	$(PY) -m ruff check .

bench: $(VENV)/.dev-deps
	$(PY) -m bench.bench_index
	$(PY) -m bench.bench_chat

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
