"""Shared by the tests that compare two input pipelines example by example."""
import numpy as np
import tensorflow as tf


def assert_same_examples(ours: tf.data.Dataset, ref: tf.data.Dataset) -> int:
  """Same element spec, then the same examples in the same order: keys in the same order,
  equal values of the same dtype. Returns the number of examples."""
  assert ours.element_spec == ref.element_spec
  n = 0
  for a, b in zip(ours.as_numpy_iterator(), ref.as_numpy_iterator(), strict=True):
    assert list(a) == list(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"example {n}, feature {k}")
      assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype
    n += 1
  return n


def as_arrays(ds: tf.data.Dataset) -> dict:
  """Whole dataset -> {feature: [rows, ...] array} (empty dict for an empty dataset)."""
  out = {}
  for ex in ds.as_numpy_iterator():
    for k, v in ex.items():
      out.setdefault(k, []).append(v)
  return {k: np.stack(v) for k, v in out.items()}


def assert_same(ours: dict, ref: dict) -> None:
  """Two `as_arrays` results: the same features (in any order), equal values."""
  assert sorted(ours) == sorted(ref)
  for k in ref:
    np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


_MAPS = ("MapDataset", "ParallelMapDataset", "ParallelMapDatasetV2")
_BATCHING = ("BatchDataset", "BatchDatasetV2", "PaddedBatchDataset", "PaddedBatchDatasetV2")


def per_example_maps_on_threads(ds: tf.data.Dataset) -> list:
  """The maps of `ds` that run once per example on a thread pool (each call a thread hand-off).

  Walks the pipeline's graph back from its output (examples): behind an `unbatch` the elements
  are batches, behind a `batch` / `padded_batch` examples again. Returns the names of the maps
  met at the example level that lack `use_inter_op_parallelism=False` (what
  `pipeline_options.inline_map` builds).
  """
  graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())  # pylint: disable=protected-access
  nodes = {n.name: n for n in graph.node}
  found, seen = [], set()
  todo = [(n.input[0], True) for n in graph.node if n.op == "_Retval"]
  while todo:
    name, per_example = todo.pop()
    name = name.split(":")[0].lstrip("^")
    if (name, per_example) in seen or name not in nodes:
      continue
    seen.add((name, per_example))
    node = nodes[name]
    if per_example and node.op in _MAPS and node.attr["use_inter_op_parallelism"].b:
      found.append(node.name)
    if node.op == "UnbatchDataset":
      per_example = False
    elif node.op in _BATCHING:
      per_example = True
    todo += [(i, per_example) for i in node.input
             if "Dataset" in getattr(nodes.get(i.split(":")[0].lstrip("^")), "op", "")]
  return found
