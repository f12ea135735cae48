# Parity: the two commands are `make run` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

# The test suite runs against real services; these are the local defaults.
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/parity)
TEST_REDIS_URL ?= $(or $(REDIS_URL),redis://127.0.0.1:6379/0)

# The engine: vLLM's CUDA build where there is a GPU, its CPU build everywhere else.
ENGINE_EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
TEST_BROKER_URL ?= $(or $(CELERY_BROKER_URL),amqp://guest:guest@127.0.0.1:5672//)

.PHONY: run test setup setup-dev lint typecheck pytest services browser clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[$(ENGINE_EXTRA)]'
	@# The registry's torchvision/torchaudio/torchcodec are CUDA builds that break
	@# `import transformers` next to the CPU torch (ENGINE_NOTES.md): vLLM runs without them.
	if [ "$(ENGINE_EXTRA)" = cpu ]; then $(PIP) uninstall --quiet -y torchvision torchaudio torchcodec; fi
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	touch $@

# Chart.js for the admin UI, pinned by package-lock.json, served from our own static files.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the admin UI's chart library: apt-get install npm"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed
setup-dev: $(VENV)/.installed-dev node_modules/.installed

## run: embedded mode (SQLite, in-process broker, a real vLLM engine on the tiny local
## model) on http://127.0.0.1:8000
run: setup
	DEBUG=true $(PY) manage.py migrate --verbosity 0
	DEBUG=true $(PY) manage.py seed_demo
	DEBUG=true $(PY) -m config.embedded 127.0.0.1:8000

## test: lint, type-check and the whole suite against PostgreSQL and Redis
test: setup-dev lint typecheck pytest

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The Django plugin imports the settings, which need a SECRET_KEY when DEBUG is off.
typecheck: setup-dev
	SECRET_KEY=typecheck $(VENV)/bin/mypy --strict scheduler_core
	SECRET_KEY=typecheck $(VENV)/bin/mypy config tenants usage billing workers gateway wire

services: setup-dev
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) scripts/ensure_services.py

# The browser tests' headless Chromium and its driver: Debian's packages.
browser:
	$(PYTHON) scripts/ensure_browser.py

pytest: services browser
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	CELERY_BROKER_URL=$(TEST_BROKER_URL) HF_HUB_OFFLINE=1 \
	SECRET_KEY=parity-test-only-secret-key DEBUG=false \
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache .hypothesis
