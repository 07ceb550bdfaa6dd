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
