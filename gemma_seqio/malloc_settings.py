"""glibc malloc settings for our long jobs: keep freed memory for the next step instead of
handing it back to the kernel.

Why: a JAX training step on CPU allocates and frees the same large buffers every step
(activations, logits, gradients: tens of MB). With glibc's defaults, buffers above the mmap
threshold are `mmap`ed and `munmap`ed each time, and the per-thread arenas that XLA's threads
use delete their 64 MB heaps when they empty (neither is governed by the trim threshold). So
every step faults its buffers in again, page by page: the recipe's step took ~47,000 minor page
faults, and the trainer spent a quarter of its CPU time in the kernel. With the settings below
the same 400 steps of `model.runner.train` ran 1.32x faster with the same losses, with 63x fewer
page faults (`benchmarks/model.py` times the step both ways; README, "The model").

`keep_freed_memory()` sets, through `mallopt(3)`:
  * `M_ARENA_MAX=1`: every thread allocates from the main arena, which is trimmed by the
    threshold below (threads that already have an arena keep it, so call this before JAX or
    TensorFlow start their thread pools: first thing in a CLI's `main`);
  * `M_MMAP_MAX=0`: large blocks come from the heap, where a freed block is reused;
  * `M_TRIM_THRESHOLD` at its maximum: the heap's top is not returned to the kernel.
The price is that the process keeps its peak heap until it exits, which is what a training or
evaluation job does anyway. The CLIs (`model.runner.train`, `model.runner.evaluate`,
`demo.run`) call it; importing a package never does. `GEMMA_SEQIO_MALLOC=default` leaves glibc's
defaults (for a comparison, or a process that must give memory back). Elsewhere (not glibc, e.g.
macOS or musl) it does nothing.

>>> import subprocess, sys
>>> code = "from gemma_seqio import malloc_settings as m; print(m.keep_freed_memory())"
>>> subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
...                env={**os.environ, ENV: "default"}).stdout
'False\\n'
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "GEMMA_SEQIO_MALLOC"

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD_MAX = 2**31 - 1   # mallopt takes an int

_applied = False


def _glibc():
  """The process's glibc, or None (another C library, or no way to load it)."""
  name = ctypes.util.find_library("c")
  if not name:
    return None
  try:
    libc = ctypes.CDLL(name)
    libc.gnu_get_libc_version   # pylint: disable=pointless-statement  # glibc only
  except (OSError, AttributeError):
    return None
  return libc


def keep_freed_memory() -> bool:
  """Applies the settings above once per process; True if they are in effect."""
  global _applied
  if _applied:
    return True
  if os.environ.get(ENV, "").strip().lower() == "default":
    return False
  libc = _glibc()
  if libc is None:
    return False
  # mallopt returns 1 on success, 0 on a value it refuses.
  _applied = all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_MAX)))
  return _applied
