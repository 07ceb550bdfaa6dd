"""How our input pipelines run seqio's light per-example steps cheaply in tf.data.

A seqio pipeline applies several light `map`s to every example: our cached reader restates each
parsed row's spec, `Task.get_dataset` trims every feature to its length, a task's batched steps
restate the spec after `unbatch`, a mixture keeps each task's output features. Their work is a
few microseconds; what they cost is how tf.data runs them.

`inline_map`: tf.data hands every call of a `map`'s function to its inter-op thread pool (and a
parallel map to its own threads) and waits for the result. On a 2-core VM that hand-off is a
thread wake-up, ~30-50 us per element and per map, ten times the work. A map built with
`use_inter_op_parallelism=False` runs its function in the thread that pulls the element
(~1 us); TensorFlow's own CSV reader and `sample_from_datasets` build their light maps that way.
Use it for light functions only: a heavy per-example function belongs in a parallel map (or
better, in a batched step, `gemma_tasks.batched`).

>>> ds = inline_map(tf.data.Dataset.range(3), lambda x: x * 10)
>>> [int(x) for x in ds.as_numpy_iterator()]
[0, 10, 20]
>>> runs_inline(ds), runs_inline(tf.data.Dataset.range(3).map(lambda x: x * 10))
(True, False)

`with_fused_maps`: tf.data's static optimisation `map_fusion` (off by default) composes
consecutive maps into one function, with the same elements in the same order:

>>> ds = tf.data.Dataset.range(3).map(lambda x: x + 1).map(lambda x: x * 10)
>>> [int(x) for x in with_fused_maps(ds).as_numpy_iterator()]
[10, 20, 30]
>>> with_fused_maps(ds).options().experimental_optimization.map_fusion
True

Options set on a dataset hold for the whole pipeline it ends, so they are set where a task's
examples leave it (`gemma_tasks.cached.CheckedCacheTask.get_dataset`) and where a converter
takes them (ours), after the maps: the options node sits in the graph, and one placed between
two maps keeps them apart.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

try:  # The map dataset with its `use_inter_op_parallelism` switch (not exposed by `Dataset.map`).
  from tensorflow.python.data.ops import map_op as _map_op  # pylint: disable=g-direct-tensorflow-import
  _InlineMapDataset = _map_op._MapDataset  # pylint: disable=protected-access
except (ImportError, AttributeError):  # another TensorFlow: the public synchronous map
  _InlineMapDataset = None


def inline_map(ds: tf.data.Dataset, fn: Callable) -> tf.data.Dataset:
  """`ds.map(fn)` with `fn` run in the thread that pulls each element (for light `fn` only).

  `force_synchronous` keeps tf.data's `map_parallelization` from turning it into a parallel map.
  """
  if _InlineMapDataset is not None:
    try:
      return _InlineMapDataset(ds, fn, force_synchronous=True, use_inter_op_parallelism=False)
    except TypeError:  # the signature changed: same elements, default threading
      pass
  return ds.map(fn, synchronous=True)


def runs_inline(ds: tf.data.Dataset) -> bool:
  """True if `ds` is a map whose function runs in the pulling thread (what `inline_map` builds)."""
  return getattr(ds, "_use_inter_op_parallelism", True) is False


def with_fused_maps(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` with tf.data's `map_fusion` optimisation on (its elements are unchanged)."""
  options = tf.data.Options()
  options.experimental_optimization.map_fusion = True
  return ds.with_options(options)
