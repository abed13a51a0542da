# Everything a fresh machine needs, from Python, pip and apt alone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := influxdb prometheus prometheus-alertmanager postgresql chromium chromium-driver systemd mosquitto nats-server
PYTEST_ARGS ?=

.PHONY: run test venv sysdeps lint typecheck bench clean replay-example

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on disk (never a CUDA download).
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

# Install the real servers the integration tests start (only what is missing; apt-get update once).
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing \
	    || { echo "apt-get failed; tests needing these servers will skip (or fail under CI=true)"; [ -z "$$CI" ] || exit 1; }; \
	fi

run: venv
	$(BIN)/sentinel run --config config/demo.yaml

test: venv sysdeps
	$(BIN)/ruff check sentinel tests benchmarks deploy
	$(BIN)/mypy sentinel
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check sentinel tests benchmarks deploy
	$(BIN)/mypy sentinel

bench: venv
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
