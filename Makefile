# Two set-up commands: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use (about 2 minutes) and re-use it afterwards.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: demo lab test lint format clean venv

venv: $(STAMP)

# The stamp depends on pyproject.toml only: re-running with .venv present does not reinstall,
# editing the dependencies does.
# The kernel is named python3 (the notebooks and papermill ask for that name); JupyterLab shows it as
# "diffkd-study", so students see which environment runs their cells.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name diffkd-study >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/diffkd-study run configs/demo.yaml

# JupyterLab on the executed, parameter-filled notebooks of a run: make lab [NAME=demo]
lab: $(STAMP)
	$(BIN)/diffkd-study lab $(or $(NAME),demo)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check diffkd_study tests benchmarks notebooks
	$(BIN)/python -m pytest -q tests/notebooks/test_pairing.py

format: $(STAMP)
	$(BIN)/ruff check --fix diffkd_study tests benchmarks notebooks
	$(BIN)/ruff format diffkd_study tests benchmarks

clean:
	rm -rf reports/*/ .pytest_cache .ruff_cache build *.egg-info .cache/diffkd_study
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
