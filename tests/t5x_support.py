"""Where the real T5X is (or why not), for the tests marked `t5x`."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "model", "runner", "configs")

try:
  import t5x  # pylint: disable=unused-import
  # T5X's gin search path: the directory that holds the installed `t5x` package.
  T5X_ROOT = os.path.dirname(os.path.dirname(t5x.__file__))
except ImportError:
  T5X_ROOT = None

needs_t5x = pytest.mark.skipif(T5X_ROOT is None, reason=(
    "T5X is not installed (not on PyPI): `make test-t5x` installs it from ../shared/t5x"))
