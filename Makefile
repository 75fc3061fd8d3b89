# Two commands: `make run` starts the app, `make test` runs the tests. Both set up .venv first and
# reinstall only when requirements.txt changed (the stamp file is older than it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
PORT ?= 8501

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

run: setup
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench/train_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
