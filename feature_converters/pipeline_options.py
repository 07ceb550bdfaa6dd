"""The tf.data options our input pipelines run with: consecutive per-example maps fused.

A seqio pipeline applies several light `map`s to every example one after the other: our cached
reader restates each parsed row's spec, `Task.get_dataset` trims every feature to its length,
a task's batched steps restate the spec after `unbatch`. tf.data runs each map as its own stage,
and on short examples the hand-off between stages costs more than the map's work. Its static
optimisation `map_fusion` (off by default) composes consecutive maps into one function, with
the same elements in the same order:

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

import tensorflow as tf


def with_fused_maps(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` with tf.data's `map_fusion` optimisation on (its elements are unchanged)."""
  options = tf.data.Options()
  options.experimental_optimization.map_fusion = True
  return ds.with_options(options)
