# `make test` and `make demo` set themselves up from nothing: a .venv with the pinned stack.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: test test-slow test-all test-t5x demo venv clean

# T5X is not on PyPI: its wheels (built from its public sources) sit in ../shared/t5x. The T5X
# tests run in a venv of their own, so `make test` keeps proving that nothing needs T5X.
T5X_WHEELS ?= ../shared/t5x
VENV_T5X ?= .venv-t5x
PY_T5X := $(VENV_T5X)/bin/python
STAMP_T5X := $(VENV_T5X)/.installed

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The fast default for development (minutes); the integration runs marked `slow` (Beam jobs, CLIs in
# fresh interpreters, wheel builds, multi-device subprocesses) are `make test-slow`.
test: $(STAMP)
	$(PY) -m pytest -q -rs -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -rs -m slow tests

# Everything CI runs: the fast tests, the slow ones, then the real T5X.
test-all: test test-slow test-t5x

$(STAMP_T5X): setup.py constraints.txt
	test -x $(PY_T5X) || $(PYTHON) -m venv $(VENV_T5X)
	$(PY_T5X) -m pip install -q --upgrade pip setuptools wheel
	$(PY_T5X) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY_T5X) -m pip install -q --no-deps $(T5X_WHEELS)/*.whl
	$(PY_T5X) -m pip install -q -c constraints.txt -r $(T5X_WHEELS)/requirements.txt
	touch $(STAMP_T5X)

# The gin files under the real t5x.train / t5x.eval / t5x.infer (tests marked `t5x`).
test-t5x:
	@if [ -d "$(T5X_WHEELS)" ]; then \
	  $(MAKE) --no-print-directory $(STAMP_T5X) && $(PY_T5X) -m pytest -q -rs -m t5x tests; \
	else \
	  echo "test-t5x: skipped, $(T5X_WHEELS) (the T5X wheels) not found"; \
	fi

# Examples of every registered task, then the main job: Beam cache -> train -> evaluate.
demo: $(STAMP)
	$(PY) -m gemma_tasks demo
	$(PY) -m demo.run

clean:
	rm -rf $(VENV) $(VENV_T5X) *.egg-info .pytest_cache
