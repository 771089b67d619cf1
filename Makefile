# mlops-sandbox: `make` (or `make help`) lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_AIRFLOW := .venv-airflow
COMPOSE := docker compose
# Set to PyTorch's CPU wheel index to keep pip from taking the multi-GB CUDA build (see .env.example).
TORCH_INDEX_URL ?=
EXERCISES := 8# the workshop's exercises (mlops_sandbox.workshop.EXERCISES)
PIP_TORCH := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
# JupyterLab runs as the owner of notebooks/ so that it can save there (compose.yaml's jupyter service); a
# checkout owned by root keeps the image's user. A value on the command line, in the environment or in .env wins.
NOTEBOOKS_OWNER := $(shell stat -c '%u:%g' notebooks 2>/dev/null || stat -f '%u:%g' notebooks 2>/dev/null)
ifeq ($(shell grep -s -E '^JUPYTER_(UID|GID)=' .env),)
ifneq ($(filter-out 0,$(firstword $(subst :, ,$(NOTEBOOKS_OWNER)))),)
export JUPYTER_UID ?= $(firstword $(subst :, ,$(NOTEBOOKS_OWNER)))
export JUPYTER_GID ?= $(lastword $(subst :, ,$(NOTEBOOKS_OWNER)))
endif
endif

.PHONY: help up secrets down ps logs build test test-unit test-dags test-deploy test-stack lint lock bench-stack bench-predictor demo nuke \
	reset skip-to notebooks strip-notebooks screenshots k8s-render

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

up: ## build and start the stack; returns when every service is healthy
	@$(COMPOSE) up -d --build --wait || { $(COMPOSE) logs --no-log-prefix preflight | grep refusing; exit 1; }

secrets: ## write a .env with random secrets (before the first `make up`: Postgres keeps its first passwords)
	$(PYTHON) -I src/mlops_sandbox/preflight.py write-env .env.example .env

down: ## stop the stack (data volumes are kept)
	$(COMPOSE) down

nuke: ## stop the stack and delete its data volumes (images are kept)
	$(COMPOSE) down -v --remove-orphans

reset: ## back to a clean stack: delete every data volume, start again (the built images are kept)
	$(COMPOSE) down -v --remove-orphans
	$(COMPOSE) up -d --wait

skip-to: ## STEP=N: a fresh stack in the state at the start of workshop exercise N (docs/workshop.md)
	@case "$(STEP)" in [1-$(EXERCISES)]) ;; *) echo "usage: make skip-to STEP=N, N from 1 to $(EXERCISES) (docs/workshop.md)"; exit 2;; esac
	$(MAKE) --no-print-directory reset
	$(COMPOSE) run --rm cli workshop prepare $(STEP)

notebooks: ## run every notebook headless in the jupyter service, against the running stack
	$(COMPOSE) exec -T jupyter mlops-sandbox notebook run $(addprefix /home/sandbox/work/,$(sort $(wildcard notebooks/*.ipynb)))

strip-notebooks: $(VENV)/.installed ## remove outputs from notebooks/*.ipynb before a commit
	$(VENV)/bin/mlops-sandbox notebook strip notebooks/*.ipynb

ps: ## show the services and their health
	$(COMPOSE) ps

logs: ## follow every service's logs
	$(COMPOSE) logs -f --tail=100

build: ## build the two images (project, airflow)
	$(COMPOSE) build

$(VENV)/.installed: pyproject.toml services/project/requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PIP_TORCH) -r services/project/requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

$(VENV_AIRFLOW)/.installed: services/airflow/requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV_AIRFLOW)
	$(VENV_AIRFLOW)/bin/pip install -q --disable-pip-version-check -r services/airflow/requirements.lock pytest==9.2.0
	# as in the Airflow image: the library without its dependencies, for the DAGs' catalog of names
	$(VENV_AIRFLOW)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(VENV)/.installed $(VENV_AIRFLOW)/.installed ## host virtualenvs for the tests (.venv, .venv-airflow)

test: test-unit test-dags test-deploy test-stack ## every test: unit, DAG integrity, the Kubernetes manifests, then the stack (brought up by pytest-docker)

test-unit: $(VENV)/.installed ## library tests on tiny data; no Docker
	$(VENV)/bin/pytest tests/unit -m unit

test-dags: $(VENV_AIRFLOW)/.installed ## every DAG imports and has its expected tasks (Airflow venv)
	AIRFLOW_HOME=$(CURDIR)/$(VENV_AIRFLOW)/airflow-home $(VENV_AIRFLOW)/bin/pytest tests/dags -m dags -p no:cacheprovider

test-deploy: $(VENV)/.installed ## the Kubernetes manifests in deploy/: render every overlay, validate offline, check them against compose.yaml
	$(VENV)/bin/pytest tests/deploy -m deploy

k8s-render: $(VENV)/.installed ## OVERLAY=local|production: print what `kubectl apply -k deploy/overlays/OVERLAY` would apply
	$(VENV)/bin/kubectl kustomize deploy/overlays/$(or $(OVERLAY),local)

test-stack: $(VENV)/.installed ## brings up a fresh stack (project mlops-sandbox-test), tests each service, the loop and the workshop, removes it
	$(VENV)/bin/pytest tests/stack tests/e2e tests/workshop -m "stack or e2e or workshop" --durations=30

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check src tests dags scripts
	$(VENV)/bin/ruff format --check src tests dags scripts

lock: ## regenerate both dependency locks inside python:3.11-slim-bookworm
	scripts/lock.sh

screenshots: $(VENV)/.installed ## docs/img/*.png of each dashboard with headless Chromium (apt install chromium)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[docs]'
	$(VENV)/bin/python scripts/screenshots.py

bench-stack: $(VENV)/.installed ## measure `up --wait` time, idle memory and image sizes
	$(VENV)/bin/python scripts/bench_stack.py

bench-predictor: $(VENV)/.installed ## this predictor against `mlflow models serve` (stack up, a production model)
	$(VENV)/bin/python scripts/bench_predictor.py

demo: $(VENV)/.installed ## the whole loop unattended on the running stack: seed, train, drift, decay, retrain, recover
	$(COMPOSE) up -d --wait
	$(VENV)/bin/python scripts/demo.py
