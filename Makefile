# Two commands: `make run` starts the app, `make test` runs the tests. Both set up .venv first and
# reinstall only when requirements.txt changed (the stamp file is older than it); `make test` also
# installs Debian's Chromium for the browser tests when it is missing. Both test targets run ruff first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
PORT ?= 8501
CHROMIUM := /usr/bin/chromium

.PHONY: setup browser run lint test test-fast bench clean

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests (apt-get)…"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser tests need Debian's chromium at $(CHROMIUM). Install it with:"; \
	    echo "    sudo apt-get update && sudo apt-get install -y chromium"; \
	    exit 1; \
	  fi; \
	fi

run: setup
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

lint: setup
	$(PY) -m ruff check .

test: lint browser
	$(PY) -m pytest

# What runs in about a minute: no browser, no training run (the markers come from each test's fixtures).
test-fast: lint
	$(PY) -m pytest -m "not browser and not trains"

bench: setup
	$(PY) bench/train_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
