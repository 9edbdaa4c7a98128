# ptvl: the two commands of the README do all the set-up on a fresh clone.
#   make run   -> .venv + the whole DAG on the embedded synthetic sample (offline)
#   make test  -> .venv + lint + the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ptvl-installed
CONFIG ?= configs/sample.toml
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup java chromium run test lint bench clean

setup: $(STAMP) java chromium

# torch first, pinned exactly (pyproject keeps ranges for users with other CUDA builds); then the
# project with every other dependency pinned by constraints.txt. Then everything is compiled to bytecode
# once, on every core: pip compiles on one (a minute for torch, CUDA's wheels and pyspark) and never
# compiles an editable project, and where PYTHONDONTWRITEBYTECODE is set (CI) no process writes the
# bytecode it compiles, so whatever is left uncompiled here is compiled again by every process. A file
# that does not compile (a package's Python 2 test data) is left to Python, as pip leaves it.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[test]'
	$(PY) -m compileall -q -j 0 $(VENV)/lib pipeline translation training eval ptvl_io > /dev/null || true
	touch $(STAMP)

# Java runs the METEOR and PTB tokenizer jars of pycocoevalcap.
java:
	@command -v java >/dev/null 2>&1 || { echo "java not found: installing default-jre-headless"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless; }

# Chromium runs tests/test_browser.py (every HTML page, rendered). Optional: when it cannot be installed
# (no apt, no root, no network) setup goes on and that test is skipped, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "chromium not found: trying apt-get install chromium"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium could not be installed: tests/test_browser.py will be skipped"; }

run: setup
	$(VENV)/bin/ptvl run --config $(CONFIG)

lint: setup
	$(VENV)/bin/ruff check .

# pytest-xdist: many tests wait on subprocesses, servers and kills, so more workers than cores still
# shortens the run; tests/conftest.py's scheduler keeps each file (and each shared expensive fixture) on one
# worker and starts the longest groups first.
TEST_WORKERS ?= 2
test: setup lint
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: setup
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs/sample
