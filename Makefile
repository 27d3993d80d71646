# TradeSense: `make run` starts the whole stack locally; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/tradesense
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run prod prod-status prod-manage test bench lint security lock check-deploy install tools clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

# Everything under one supervisor (honcho): web (HTTP + WebSocket) on 127.0.0.1:8000,
# Celery worker and beat, and the fake payment processor. Ctrl-C stops them all.
run: $(STAMP)
	@export DEBUG=$${DEBUG:-1}; \
	$(PY) manage.py migrate --noinput -v 0 && \
	$(PY) manage.py seed_demo && \
	echo "" && \
	echo "  TradeSense is starting:" && \
	echo "    Dashboard  http://127.0.0.1:8000/        (demo / demo-pass-123)" && \
	echo "    API docs   http://127.0.0.1:8000/api/v1/docs" && \
	echo "    Admin      http://127.0.0.1:8000/admin/  (admin / admin-pass-123)" && \
	echo "  Ctrl-C stops every process." && echo "" && \
	exec $(VENV)/bin/honcho start -f Procfile

# The production topology on this machine, no Docker (docs/operations.md): nginx on
# 127.0.0.1:8080 in front of two gunicorn and two uvicorn replicas, the Celery worker and
# beat, the fake processor and Prometheus on 127.0.0.1:9090, all DEBUG=0 under
# supervisord on the local PostgreSQL and Redis. Ctrl-C stops every process.
prod: $(STAMP) tools
	@bash scripts/services.sh
	@exec $(PY) -m ops.stack up

prod-status: $(STAMP)
	@$(PY) -m ops.stack status

# e.g. make prod-manage ARGS=createsuperuser
prod-manage: $(STAMP)
	@$(PY) -m ops.stack manage $(ARGS)

# System tools: Debian's chromium (browser tests), prometheus (promtool, make prod) and
# nginx (make prod and the tests that run the production topology).
tools:
	@bash scripts/browser.sh
	@bash scripts/promtool.sh
	@bash scripts/nginx.sh

test: $(STAMP) tools
	@bash scripts/services.sh
	@export DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} DEBUG=1; \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# bandit on our code, medium severity and up; a finding is fixed or marked `# nosec BXXX`
# where the input is ours (docs/security.md).
security: $(STAMP)
	$(VENV)/bin/bandit -q -ll -r tradesense challenges risk payments accounts ops -x '*/migrations/*'

# The locks with hashes (every transitive dependency) from requirements*.in; install checks
# them with --require-hashes. Run after editing a .in file.
lock: $(STAMP)
	$(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

check-deploy: $(STAMP)
	@DEBUG=0 SECRET_KEY=$$(head -c 48 /dev/urandom | base64) PAYMENT_PROCESSOR_SECRET=$$(head -c 48 /dev/urandom | base64) \
	ALLOWED_HOSTS=tradesense.example.com DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	$(PY) manage.py check --deploy --fail-level WARNING

bench: $(STAMP)
	@bash scripts/services.sh
	@export DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)}; \
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf var staticfiles
