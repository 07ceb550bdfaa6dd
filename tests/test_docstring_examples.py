"""Every `>>>` example in the packages' docstrings runs and prints what it shows."""
import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("gemma_seqio", "gemma_tasks", "feature_converters", "model", "cache_scripts")
# Modules that import T5X itself (not a dependency of the package): their examples run in the
# T5X test environment (`make test-t5x`).
NEEDS_T5X = ("model.runner.t5x_partitioner",)


def _modules():
  names = []
  for package in PACKAGES:
    names.append(package)
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
      names.append(info.name)
  return [pytest.param(n, marks=pytest.mark.t5x) if n in NEEDS_T5X else n for n in sorted(names)]


@pytest.mark.parametrize("name", _modules())
def test_examples(name):
  if name in NEEDS_T5X:
    pytest.importorskip("t5x", reason="T5X is not installed (make test-t5x runs it)")
  module = importlib.import_module(name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  report = []
  for test in finder.find(module, name):
    if test.examples:
      runner.run(test, out=report.append)
  assert runner.failures == 0, "".join(report)
