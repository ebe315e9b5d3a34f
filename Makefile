# make run: install into .venv and start the bot in this terminal (console adapter, shipped model).
# make test: install the test dependencies too and run the tests.
# make test-docker: build the image and run it for real (tests/test_docker.py); needs a Docker engine.
# make lock: rewrite docker/constraints.txt, the versions the image installs (docker/lock.sh).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-docker lock install install-test clean

run: install
	$(BIN)/cervantes serve

test: install-test
	$(BIN)/pytest -q

test-docker: install-test
	TEST_DOCKER=required $(BIN)/pytest -q tests/test_docker.py

lock:
	PYTHON=$(PYTHON) docker/lock.sh

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed tests/telegram_emulator/package-lock.json
	$(BIN)/pip install --quiet -e '.[test]'
	npm ci --prefix tests/telegram_emulator
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
