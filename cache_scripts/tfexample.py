"""`seqio.dict_to_tfexample` without a TensorFlow op per feature: same proto bytes, ~10x faster.

seqio's version runs `tf.constant` and `tf.reshape` eagerly for every feature of every example
(two eager op dispatches per feature). Profiling the cache job on gemma_en_de_libreoffice
(31,923 examples) put 129 s of its 290 s in that function. Here dense values are flattened with
numpy; ragged and sparse values (not produced by the Gemma tasks) still go through seqio's code.

>>> ex = {"inputs": np.array([106, 2364, 107], np.int32), "targets_pretokenized": b"Hallo"}
>>> dict_to_tfexample(ex).SerializeToString() == seqio.dict_to_tfexample(ex).SerializeToString()
True
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import seqio
import tensorflow as tf


def _feature(value: Any) -> tf.train.Feature:
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if isinstance(value, (bytes, str)):
    # A scalar string; np.asarray(bytes) would strip trailing NUL bytes.
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.compat.as_bytes(value)]))
  arr = np.asarray(value)
  if arr.dtype.kind == "b":
    arr = arr.astype(np.int64)  # protobuf wants ints in Int64List; same bytes as seqio's
  values = arr.reshape(-1).tolist()
  kind = arr.dtype.kind
  if kind in "biu":
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  if kind == "f":
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  if kind in "OSU":
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[tf.compat.as_bytes(v) for v in values]))
  raise ValueError(f"Unsupported type {arr.dtype}")


def dict_to_tfexample(dct: Mapping[str, Any]) -> tf.train.Example:
  """Dense features as seqio stores them; anything else via `seqio.dict_to_tfexample`."""
  if any(isinstance(v, (tf.RaggedTensor, tf.SparseTensor)) for v in dct.values()):
    return seqio.dict_to_tfexample(dct)
  return tf.train.Example(features=tf.train.Features(
      feature={k: _feature(v) for k, v in dct.items()}))
