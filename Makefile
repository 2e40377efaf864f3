# The two set-up commands of the README: `make demo` and `make test`. Each installs what it
# needs: uv (from PyPI, when it is not on the PATH), then the locked environment in .venv.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
OUT ?= out
RUN ?= runs/demo
# This machine's Python is told not to write bytecode (PYTHONDONTWRITEBYTECODE), so every process
# compiled torch's sources again (7 s of a 13 s tiny sample call). Letting it write bytecode as modules are
# first imported compiles only what runs, once; `uv sync --compile-bytecode` compiled all 8,500
# files of the environment ahead, 30 s of a fresh clone's set-up.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test lint

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked

demo: setup
	bash scripts/demo.sh "$(RUN)" "$(OUT)"

test: setup
	bash scripts/test.sh

lint: setup
	$(UV) run ruff check .
