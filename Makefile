# dmd-pipeline: every target installs what it needs on first use (uv, then the locked environment).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
# Compiled modules are kept under .pycache, even where the shell sets PYTHONDONTWRITEBYTECODE: the suite and the
# demo start dozens of Python processes, and each would otherwise compile moto, botocore and pyarrow again. (Not
# under .venv: the first python3 -m uv would create it there, and uv refuses a .venv without an interpreter.)
export PYTHONPYCACHEPREFIX := $(CURDIR)/.pycache
unexport PYTHONDONTWRITEBYTECODE
# No default stack: commands bound to a deployed stack must be told which one (a missing STACK stops make).
PLAN_STACK = $(or $(STACK),dev1)
BOUND_STACK = $(or $(STACK),$(error STACK is required: make $(or $@,$(STATUS_GOAL)) STACK=<dev1|qa1|preprod1|prod1>))
ARGS ?=
PYTEST_ARGS ?=
# replay's first word says what to replay (make replay STACK=qa1 ARGS="quarantine --dry-run")
REPLAY_SOURCE = $(if $(BOUND_STACK),)$(or $(filter quarantine failures,$(word 1,$(ARGS))),$(error ARGS must start with what to replay: \
  make replay STACK=$(or $(STACK),<stack>) ARGS="quarantine --dry-run" (quarantine or failures, then their options)))

# The ops commands: what each target runs (through $(RUN)).
COMMAND_package = python -m ops.package $(ARGS)
COMMAND_rollback = python -m ops.rollback $(BOUND_STACK) $(ARGS)
COMMAND_smoke = python -m ops.smoke $(BOUND_STACK) $(ARGS)
COMMAND_preflight = python -m ops.preflight $(BOUND_STACK) $(ARGS)
COMMAND_capacity = python -m ops.capacity $(BOUND_STACK) $(ARGS)
COMMAND_compact = python -m ops.compact $(BOUND_STACK) $(ARGS)
COMMAND_replay = python -m ops.replay $(REPLAY_SOURCE) $(BOUND_STACK) $(wordlist 2,$(words $(ARGS)),$(ARGS))
COMMAND_backfill = python -m ops.backfill $(BOUND_STACK) $(ARGS)
# erase's file of fan ids (one per line): make erase STACK=qa1 FANS=fans.txt ARGS=--dry-run
FANS_FILE = $(if $(BOUND_STACK),)$(or $(FANS),$(error FANS is required: make erase STACK=$(or $(STACK),<stack>) FANS=<file of fan ids, one per line>))
COMMAND_erase = python -m ops.erase $(BOUND_STACK) --fans $(FANS_FILE) $(ARGS)
COMMAND_erase-status = python -m ops.erase $(BOUND_STACK) --status $(ARGS)

# Exit statuses. GNU make exits 2 whenever a recipe fails, which would turn every documented status of these commands
# (backfill's 1 = incomplete, smoke's 1 = a failed check) into 2. So when one of them is make's only goal (and make
# is not in -n, -q or -t mode), it runs while this Makefile is read: its stdout goes to make's own stdout (its
# stderr is make's), and make then ends with its status: 0; 1 through make's question mode (-q), whose status is 1;
# any other through a failing recipe (2). With several goals each runs as an ordinary recipe.
STATUS_TARGETS := package rollback smoke preflight capacity compact replay backfill erase erase-status
STATUS_GOAL := $(if $(filter 1,$(words $(MAKECMDGOALS))),$(filter $(STATUS_TARGETS),$(MAKECMDGOALS)))
MAKE_FLAG_LETTERS := $(filter-out --%,$(firstword -$(MAKEFLAGS)))
STATUS_PROBE := $(shell true)
# .SHELLSTATUS needs GNU make 4.2 or later: an older make runs the command as an ordinary recipe (exit status 2)
ifneq ($(STATUS_GOAL)$(.SHELLSTATUS),$(STATUS_GOAL))
ifneq ($(STATUS_GOAL),)
ifeq ($(strip $(foreach flag,n q t,$(findstring $(flag),$(MAKE_FLAG_LETTERS)))),)
STATUS_COMMAND := $(COMMAND_$(STATUS_GOAL))
STATUS_OUT := $(shell out=/proc/$$PPID/fd/1; [ -w "$$out" ] || out=/dev/stderr; \
  $(MAKE) --no-print-directory -s setup >&2 && $(RUN) $(STATUS_COMMAND) >>"$$out")
STATUS_CODE := $(.SHELLSTATUS)
ifeq ($(STATUS_CODE),1)
MAKEFLAGS += -q
endif
endif
endif
endif
# A target's recipe: the command, or its status when it already ran while the Makefile was read.
run_command = $(if $(filter $1,$(STATUS_GOAL)),$(if $(STATUS_CODE),@exit $(STATUS_CODE),$(RUN) $(COMMAND_$1)),$(RUN) $(COMMAND_$1))

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint typecheck compile-tests unit bench package plan clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check 'uv>=0.9'
	$(UV) sync --frozen
	@touch $@

setup: .venv/.synced  ## install the locked environment into .venv

demo: .venv/.synced  ## run the pipeline end to end on the embedded local AWS (ARGS="--events 5000 --seed 3 --keep")
	$(RUN) python -m sandbox.demo $(ARGS)

lint: .venv/.synced  ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: .venv/.synced  ## mypy
	$(RUN) mypy

unit: .venv/.synced  ## pytest only (four workers), then its 15 slowest tests (PYTEST_ARGS="-k decode")
	$(RUN) pytest -n 4 --dist loadgroup --durations=15 $(PYTEST_ARGS)

test: lint  ## lint, types, then the whole suite (what CI runs)
	@$(MAKE) --no-print-directory -j 2 typecheck compile-tests
	@$(MAKE) --no-print-directory unit

# Beside mypy (one core), one collection compiles the modules the suite imports and rewrites its asserts into
# .pycache, once: otherwise each of unit's four workers does it at the same time on a fresh clone (about 12 s of
# CPU each). Collection errors are the suite's to report.
compile-tests: .venv/.synced
	@$(RUN) pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1 || true

bench: .venv/.synced  ## benchmark the handler's hot path against a naive reference, then curation and registrations on one core
	$(RUN) python -m bench $(ARGS)
	$(RUN) python -m bench.curation
	$(RUN) python -m bench.registrations

package: .venv/.synced  ## build dist/function.zip, layer.zip, curator.zip and curator-layer.zip (deterministic)
	$(call run_command,package)

plan: .venv/.synced  ## offline preview: resources the program declares for STACK (make plan STACK=qa1; default dev1)
	$(RUN) python -m ops.plan $(PLAN_STACK) $(ARGS)

clean:  ## remove build output and caches (keeps .venv)
	rm -rf dist build .pytest_cache .ruff_cache .mypy_cache .hypothesis .pycache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

# Day-2 operations against a deployed stack (outputs from `pulumi stack output`, or STACK_OUTPUTS_FILE).
.PHONY: rollback smoke capacity preflight

rollback: .venv/.synced  ## list published versions, or point the live alias back (make rollback STACK=qa1 ARGS="--to 41")
	$(call run_command,rollback)

smoke: .venv/.synced  ## post-deployment checklist of STACK; non-zero with a table of failures (ARGS="--minutes 30")
	$(call run_command,smoke)

preflight: .venv/.synced  ## read-only checks of STACK's account before a deploy (STACK required; ARGS=--local: local AWS)
	$(call run_command,preflight)

capacity: .venv/.synced  ## sustained change rate, peak headroom, cost per million changes (ARGS="--records-per-second 2500")
	$(call run_command,capacity)

.PHONY: compact
compact: .venv/.synced  ## one curation of STACK now, via its curator function (make compact STACK=qa1 ARGS=--dry-run)
	$(call run_command,compact)

# Erasure of fans (GDPR art. 17): file a request the curator carries out on its next run, and follow it.
.PHONY: erase erase-status
erase: .venv/.synced  ## file an erasure request for FANS (one fan id a line) in STACK (ARGS=--dry-run: rows per place, nothing changed)
	$(call run_command,erase)

erase-status: .venv/.synced  ## STACK's erasure requests: pending, completed (rows removed, snapshots), overdue (exit 1)
	$(call run_command,erase-status)

# The end-to-end and per-component suites: the embedded local AWS by default, a deployed stack with TEST_ENV
# (TEST_ENV=qa1 AWS_REGION=us-east-1 make e2e); faults always run locally. Replay re-drives records after a fix.
.PHONY: e2e integration faults crash-matrix replay

e2e: .venv/.synced  ## end-to-end suite on TEST_ENV (unset/local: embedded local AWS; dev1, qa1, preprod1: deployed)
	$(RUN) pytest -n 2 tests/e2e $(PYTEST_ARGS)

integration: .venv/.synced  ## per-component checks on TEST_ENV (function, alias, mapping, workgroup, Glue table)
	$(RUN) pytest -n 2 tests/integration $(PYTEST_ARGS)

faults: .venv/.synced  ## injected failures on the local AWS: S3 outage, crashes, exhausted retries, replays
	$(RUN) pytest -n 2 tests/faults $(PYTEST_ARGS)

crash-matrix: .venv/.synced  ## an erasure crashed after every one of its changing calls, then rerun (make unit: 14 of the 149)
	DMD_ERASURE_CRASH_EVERY_CALL=1 $(RUN) pytest -n 2 --dist load --timeout=900 --durations=5 tests/curator/test_erasure_crashes.py $(PYTEST_ARGS)

replay: .venv/.synced  ## re-drive quarantined records or discarded batches of STACK (ARGS="quarantine --dry-run")
	$(call run_command,replay)

# Bootstrap the lake from a point-in-time export of the table.
.PHONY: backfill bench-backfill

backfill: .venv/.synced  ## export STACK's table, back-fill the snapshot table, check the counts (Step Functions, or a process pool on the local AWS; STACK required)
	$(call run_command,backfill)

bench-backfill: .venv/.synced  ## backfill of one export data file: rows/s and peak memory (ARGS="--megabytes 100")
	$(RUN) python -m bench.backfill $(ARGS)
