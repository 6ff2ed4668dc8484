# Every target uses the virtual environment at .venv (created by `make install`).
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install demo test lint clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml scripts/install_env.sh
	bash scripts/install_env.sh $(VENV)
	touch $@

## Main job on the built-in default: tiny random LLaVA on the synthetic smoke suite.
demo: $(INSTALLED)
	$(PY) run.py

## Test suite (what CI runs).
test: $(INSTALLED)
	$(PY) -m pytest

## Lint and format check.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check evoprune baselines tests scripts run.py
	$(VENV)/bin/ruff format --check evoprune baselines tests scripts run.py

clean:
	rm -rf $(VENV) results/runs evoprune/harness/tasks/smoke/data
