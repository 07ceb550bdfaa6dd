"""The tokenize step of every registered task: seqio's `tokenize`, one SentencePiece op per batch.

`tokenize(dataset, output_features)` yields what `seqio.preprocessors.tokenize` yields (each
output feature's string encoded with its vocabulary, the string kept as `<name>_pretokenized`,
every other feature passed through; same tokens, same order, same element spec), but encodes
`batched.BATCH_SIZE` examples per op instead of one, which is where seqio's per-example map
spends its time on short texts:

>>> from gemma_tasks.builders import output_features
>>> ds = tf.data.Dataset.from_tensor_slices({"inputs": ["Hi", "Bye"], "targets": ["Hallo", ""]})
>>> [{k: v.tolist() if k in ("inputs", "targets") else v for k, v in ex.items()}
...  for ex in tokenize(ds, output_features()).as_numpy_iterator()]
[{'inputs_pretokenized': b'Hi', 'inputs': [4053, 3999], 'targets_pretokenized': b'Hallo', 'targets': [4053, 610, 4003]},
 {'inputs_pretokenized': b'Bye', 'inputs': [3180, 3996], 'targets_pretokenized': b'', 'targets': []}]

Every task that `gemma_tasks.builders` registers uses this function (it is bound into the
task's preprocessor list at registration). Features it cannot batch the same way (a string
feature that is not a scalar, a vocabulary whose `encode_tf` is not SentencePiece's batched op)
go through seqio's own `tokenize`, so the result is seqio's in every case.
"""
from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from gemma_tasks import batched


def _batchable(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> bool:
  spec = dataset.element_spec
  if not isinstance(spec, Mapping):
    return False
  for name in output_features:
    feature_spec = spec.get(name)
    if feature_spec is None or feature_spec.dtype != tf.string:
      continue
    if not isinstance(feature_spec, tf.TensorSpec) or feature_spec.shape.rank != 0:
      return False
    if not isinstance(output_features[name].vocabulary, seqio.SentencePieceVocabulary):
      return False
  return True


def tokenize(dataset: tf.data.Dataset,
             output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  """`seqio.preprocessors.tokenize(dataset, output_features)` (no EOS), batched."""
  if not _batchable(dataset, output_features):
    return seqio.preprocessors.tokenize(dataset, output_features)
  names = [k for k in output_features
           if k in dataset.element_spec and dataset.element_spec[k].dtype == tf.string]

  def encode(batch):
    out = {}  # in seqio's key order: the `_pretokenized` copy just before each encoded feature
    for name, value in batch.items():
      if name in names:
        out[f"{name}_pretokenized"] = value
        # SentencePiece's TF op on a vector of strings: a RaggedTensor, row i = example i.
        value = output_features[name].vocabulary.encode_tf(value)
      out[name] = value
    return out

  return batched.over_batches(dataset, encode)
