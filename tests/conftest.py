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


@pytest.fixture
def load_tool():
  """Loads a script of `tools/` (not a package) as a module: `load_tool("split_loss")`."""
  import importlib.util  # noqa: PLC0415

  def load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(__file__), "..", "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  return load


@pytest.fixture
def flip_a_bit():
  """Damages a checkpoint: flips one bit in the middle of the largest file under
  `<step_dir>/state`; returns that file's path."""
  def flip(step_dir):
    state = os.path.join(str(step_dir), "state")
    files = [os.path.join(r, n) for r, _, names in os.walk(state) for n in names]
    victim = max(files, key=os.path.getsize)
    with open(victim, "rb") as f:
      data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    with open(victim, "wb") as f:
      f.write(bytes(data))
    return victim
  return flip


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: integration runs (Beam jobs, CLIs in fresh interpreters, wheel builds, "
      "multi-device subprocesses); `make test` leaves them out, `make test-slow` and CI run them")
  config.addinivalue_line(
      "markers", "t5x: runs the real T5X library (installed by `make test-t5x`; skipped without it)")
