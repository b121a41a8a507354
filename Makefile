# Set-up and the two commands of the README.
# `make demo` and `make test` create .venv when it is missing: torch 2.13.0 (CPU build,
# on this machine's disk) first, then the package with its test extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-tiny test clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .[test]
	touch $(STAMP)

demo: $(STAMP)
	$(PY) use_cases/hippocampus.py

demo-tiny: $(STAMP)
	$(PY) use_cases/hippocampus.py --tiny

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) output *.egg-info
