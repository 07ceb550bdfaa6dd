# `make test` and `make demo` set themselves up from nothing: a .venv with the pinned stack.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: test demo venv clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Examples of every registered task, then the main job: Beam cache -> train -> evaluate.
demo: $(STAMP)
	$(PY) -m gemma_tasks demo
	$(PY) -m demo.run

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
