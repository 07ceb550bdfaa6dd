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
