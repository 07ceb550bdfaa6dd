"""The TensorFlow edge shared by the Gemma converters: batch, convert in numpy, unbatch.

seqio converts one example at a time: a handful of per-example `map`s plus, for packing, a
`tf.while_loop` step per example. On a small CPU each per-example function call costs tens of
microseconds, which is where seqio's pipeline spends its time. Here the whole conversion runs
once per batch of thousands of examples:

    task examples ─ padded_batch (C++, no per-example function) ─ numpy conversion
                  ─ unbatch (C++) ─ one model example per row

The numpy conversion is the pure function of each converter family (`decoder_only`,
`encoder_decoder`, `seq2seq`), built on `packing`.

Batch boundaries matter for packing: seqio packs each `padded_batch` of max(lengths) examples
separately. A batch here is a whole number of such chunks and the numpy packer restarts at every
chunk boundary, so the rows are the same as seqio's.
"""
from __future__ import annotations

import abc
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from feature_converters import packing
from feature_converters.pipeline_options import inline_map, with_fused_maps
from gemma_seqio.special_tokens import BOS_ID

IN_ORDER = "in_order"
BEST_FIT = "best_fit"
PACKING_MODES = (IN_ORDER, BEST_FIT)

# Examples per numpy call: large enough that the per-call cost (a Python round trip) vanishes,
# small enough to keep latency and memory modest.
DEFAULT_EXAMPLES_PER_CALL = 2048
DEFAULT_BEST_FIT_BUFFER = 4096

Arrays = Dict[str, Tuple[np.ndarray, np.ndarray]]


def _default_padding(spec: tf.TensorSpec):
  if spec.dtype == tf.string:
    return tf.constant("", tf.string)
  if spec.dtype == tf.bool:
    return tf.constant(False)
  return tf.constant(0, spec.dtype)


class GemmaFeatureConverter(seqio.FeatureConverter, metaclass=abc.ABCMeta):
  """A `seqio.FeatureConverter` whose conversion is one numpy call per batch of examples.

  Subclasses define `TASK_FEATURES`, `MODEL_FEATURES`, `get_model_feature_lengths` and
  `convert_arrays` (the numpy conversion of a batch); this class does the TF plumbing and the
  validation that `seqio.FeatureConverter.__call__` asks for.

  Args:
    pack: pack several examples per row.
    packing: "in_order" (seqio's rule, identical rows; the default) or "best_fit" (denser:
      best-fit decreasing within buffers of `best_fit_buffer_size` examples).
    best_fit_buffer_size: examples per best-fit buffer.
    apply_length_check: as in seqio: raise if a task feature is longer than its length.
    bos_id: must be Gemma's BOS (2); accepted only so that code written for seqio converters
      (`bos_id=...`) keeps working, and refused if it is anything else.
    examples_per_call: examples per numpy call (rounded up to whole packing chunks).
  """

  def __init__(self, pack: bool = True, *, packing: str = IN_ORDER,
               best_fit_buffer_size: int = DEFAULT_BEST_FIT_BUFFER,
               apply_length_check: bool = True, bos_id: int = BOS_ID,
               use_custom_packing_ops: bool = False,
               passthrough_features: Optional[Mapping[str, Any]] = None,
               examples_per_call: int = DEFAULT_EXAMPLES_PER_CALL):
    if bos_id != BOS_ID:
      raise ValueError(
          f"{type(self).__name__}: Gemma's BOS id is {BOS_ID}; got bos_id={bos_id}. "
          "(seqio's default 0 is Gemma's PAD.)")
    if use_custom_packing_ops:
      raise ValueError(f"{type(self).__name__}: use_custom_packing_ops is not supported "
                       "(the batched numpy packer replaces it).")
    if passthrough_features:
      raise NotImplementedError(f"{type(self).__name__}: passthrough_features are not supported.")
    if packing not in PACKING_MODES:
      raise ValueError(f"packing must be one of {PACKING_MODES}, got {packing!r}")
    if best_fit_buffer_size < 1 or examples_per_call < 1:
      raise ValueError("best_fit_buffer_size and examples_per_call must be positive")
    self._packing = packing
    self._best_fit_buffer_size = best_fit_buffer_size
    self._examples_per_call = examples_per_call
    super().__init__(pack=pack, use_custom_packing_ops=False,
                     apply_length_check=apply_length_check, bos_id=BOS_ID)

  @property
  def packing(self) -> str:
    return self._packing

  # ---- what subclasses provide -------------------------------------------------------------

  @abc.abstractmethod
  def convert_arrays(self, features: Arrays, task_feature_lengths: Mapping[str, int]
                     ) -> Dict[str, np.ndarray]:
    """Numpy conversion of a batch: {task feature: (0-padded tokens, lengths)} -> model rows."""

  def chunk_size(self, task_feature_lengths: Mapping[str, int]) -> int:
    """Examples that seqio packs together in one `padded_batch` (its packing restarts after)."""
    return max(task_feature_lengths.values())

  # ---- shared pieces -----------------------------------------------------------------------

  def assign_rows(self, lengths: np.ndarray, capacities: Sequence[int], chunk_size: int):
    """Row and offsets of every example, by the configured packing mode."""
    if self._packing == BEST_FIT:
      return packing.pack_best_fit(lengths, capacities, self._best_fit_buffer_size)
    return packing.pack_in_order(lengths, capacities, chunk_size)

  def check_lengths(self, features: Arrays, task_feature_lengths: Mapping[str, int]) -> None:
    """seqio's input validation, on a whole batch: every feature within its length."""
    if not self._apply_length_check:
      return
    for key, (_, lengths) in features.items():
      limit = task_feature_lengths[key]
      if lengths.size and lengths.max() > limit:
        raise ValueError(
            f"Feature '{key}' has length not less than or equal to the expected length of "
            f"{limit} during input_validation validation (got {int(lengths.max())})")

  def _validate_dataset(self, ds, expected_features, expected_lengths, strict, error_label):
    """seqio's static checks; the length checks without a per-example `map`.

    Input lengths (strict=False) are checked inside the batched conversion (`check_lengths`).
    Output lengths (strict=True) are static shapes here, so they are checked at graph
    construction; only a dataset without static lengths falls back to seqio's per-example map.
    """
    element_spec = ds.element_spec
    for feat, spec in expected_features.items():
      if feat not in element_spec:
        raise ValueError(
            f"Dataset is missing an expected feature during {error_label} validation: "
            f"'{feat}'. Received {element_spec}, expected {expected_features}.")
      if spec.dtype != element_spec[feat].dtype:
        raise ValueError(
            f"Dataset has incorrect type for feature '{feat}' during {error_label} validation: "
            f"Got {element_spec[feat].dtype.name}, expected {spec.dtype.name}")
      if spec.rank != len(element_spec[feat].shape):
        raise ValueError(
            f"Dataset has incorrect rank for feature '{feat}' during {error_label} validation: "
            f"Got {len(element_spec[feat].shape)}, expected {spec.rank}")
    if not strict or not self._apply_length_check:
      return ds
    static_ok = True
    for feat, spec in expected_features.items():
      if feat not in expected_lengths or spec.rank == 0:
        continue
      dim = element_spec[feat].shape[spec.sequence_dim]
      if dim is None:
        static_ok = False
      elif dim != expected_lengths[feat]:
        raise ValueError(
            f"Feature '{feat}' has length {dim}, not equal to the expected length of "
            f"{expected_lengths[feat]} during {error_label} validation")
    if static_ok:
      return ds
    return super()._validate_dataset(ds, expected_features, expected_lengths, strict, error_label)

  def _output_specs(self, task_feature_lengths):
    lengths = self.get_model_feature_lengths(task_feature_lengths)
    specs = dict(self.MODEL_FEATURES)
    if self.pack:
      specs.update({k: seqio.FeatureConverter.FeatureSpec(dtype=v)
                    for k, v in self.PACKING_FEATURE_DTYPES.items()})
    out = {}
    for key in sorted(specs):
      spec = specs[key]
      shape = [lengths[key]] + [1] * (spec.rank - 1)
      out[key] = (spec.dtype, shape)
    return out

  def _batch_size(self, task_feature_lengths) -> int:
    if not self.pack:
      return self._examples_per_call
    if self._packing == BEST_FIT:
      unit = self._best_fit_buffer_size
    else:
      unit = self.chunk_size(task_feature_lengths)
    return unit * max(1, -(-self._examples_per_call // unit))

  def check_task_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> None:
    """Every task feature needs a whole-number length of at least 1.

    A length of 0 leaves no room for a single token: the packed converters would divide by
    their chunk size (0) and the unpacked ones build zero-width rows that crashed the process.

    >>> from feature_converters import GemmaSeq2SeqFeatureConverter
    >>> GemmaSeq2SeqFeatureConverter().check_task_feature_lengths({"inputs": 0, "targets": 0})
    Traceback (most recent call last):
    ValueError: GemmaSeq2SeqFeatureConverter: task feature 'inputs' has length 0; every task
    feature needs a length of at least 1 (got {'inputs': 0, 'targets': 0})
    """
    for key in self.TASK_FEATURES:
      length = task_feature_lengths[key]  # presence is checked by seqio before this
      if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(
            f"{type(self).__name__}: task feature {key!r} has length {length!r}; every task "
            f"feature needs a length of at least 1 (got {dict(task_feature_lengths)})")

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    # seqio's __call__ (not to be overridden) has checked that every feature has a length.
    self.check_task_feature_lengths(task_feature_lengths)
    # seqio's trim map and the maps before it run as one stage (`pipeline_options`).
    ds = with_fused_maps(ds)
    keys = list(self.TASK_FEATURES)
    task_feature_lengths = dict(task_feature_lengths)
    # Unpacked, one example makes one row: keep the length that `unbatch` forgets, as seqio's
    # per-example converters do (T5X's inference sizes its loop with `len(ds)`).
    cardinality = int(ds.cardinality()) if not self.pack else tf.data.UNKNOWN_CARDINALITY
    if not all(isinstance(s, tf.TensorSpec) for s in ds.element_spec.values()):
      # e.g. the RaggedTensorSpec (ragged_rank 0) that an `unbatch` of ragged rows leaves:
      # `padded_batch` wants plain tensors, which is what this map hands on.
      ds = inline_map(ds, lambda ex: dict(ex))
    padding_values = {}
    for key, spec in ds.element_spec.items():
      padding_values[key] = (tf.constant(packing.SENTINEL, spec.dtype) if key in keys
                             else _default_padding(spec))
    ds = ds.padded_batch(self._batch_size(task_feature_lengths), padding_values=padding_values)

    out_specs = self._output_specs(task_feature_lengths)
    out_keys = list(out_specs)

    def convert_batch(*arrays):
      features = {k: packing.from_sentinel_padded(a) for k, a in zip(keys, arrays)}
      self.check_lengths(features, task_feature_lengths)
      result = self.convert_arrays(features, task_feature_lengths)
      return [np.asarray(result[k], dtype=out_specs[k][0].as_numpy_dtype) for k in out_keys]

    def convert(batch):
      outputs = tf.numpy_function(convert_batch, [batch[k] for k in keys],
                                  [out_specs[k][0] for k in out_keys], stateful=False)
      converted = {}
      for key, tensor in zip(out_keys, outputs):
        tensor.set_shape([None] + out_specs[key][1])
        converted[key] = tensor
      return converted

    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if cardinality >= 0:
      ds = ds.apply(tf.data.experimental.assert_cardinality(cardinality))
    return ds
