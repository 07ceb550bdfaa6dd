"""Shared test set-up: quiet TF logs, a tiny config of registered names, registry clean-up."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture
def temp_task_names():
  """Collects names a test registers with seqio and removes them afterwards."""
  import seqio  # noqa: PLC0415
  names = []
  yield names
  for n in names:
    seqio.TaskRegistry.remove(n)
    seqio.MixtureRegistry.remove(n)


@pytest.fixture
def global_cache_dirs():
  """Restores seqio's global cache dirs (process-wide state) after the test."""
  import seqio  # noqa: PLC0415
  old = list(seqio.utils.get_global_cache_dirs())
  yield
  seqio.utils.set_global_cache_dirs(old)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "t5x: runs the real T5X library (installed by `make test-t5x`; skipped without it)")
