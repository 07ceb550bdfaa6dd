"""`gemma_seqio.malloc_settings`: freed memory is reused instead of faulted in again.

Each case runs in a fresh interpreter: the settings are per process and must come before any
thread allocates.
"""
import json
import os
import subprocess
import sys

import pytest

from gemma_seqio import malloc_settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocate, touch and free a 64 MB block 20 times (as a training step does with its buffers);
# report the minor page faults of the loop.
_LOOP = """
import ctypes, json, resource
from gemma_seqio import malloc_settings
applied = [malloc_settings.keep_freed_memory(), malloc_settings.keep_freed_memory()]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _run_loop(env_value: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _LOOP], capture_output=True, text=True, check=True,
                       cwd=REPO, env={**os.environ, malloc_settings.ENV: env_value,
                                      "PYTHONPATH": REPO})
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(malloc_settings._glibc() is None, reason="not glibc: the settings do nothing")
def test_freed_blocks_are_reused_not_faulted_in_again():
  ours = _run_loop("")
  defaults = _run_loop("default")
  assert ours["applied"] == [True, True]
  assert defaults["applied"] == [False, False]
  pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  # glibc's defaults map and unmap the block every time: every page faults in every round.
  assert defaults["faults"] >= 15 * pages, defaults
  # Ours faults the block in once (the first round), then reuses it.
  assert ours["faults"] <= 2 * pages, ours


def test_clis_apply_the_settings_before_anything_else():
  # The settings only reach threads started after them: each CLI's main applies them first.
  import inspect
  from demo import run
  from model.runner import evaluate, train
  for module in (train, evaluate):
    source = inspect.getsource(module.main)
    assert source.index("keep_freed_memory()") < source.index("_main(args)"), module.__name__
  source = inspect.getsource(run.main)
  assert source.index("keep_freed_memory()") < source.index("_run(opts"), "demo.run"
