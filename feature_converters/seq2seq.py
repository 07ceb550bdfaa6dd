"""`GemmaSeq2SeqFeatureConverter`: the fields of `gm.data.Seq2SeqTask`, from seqio task features.

For users of the gemma library's trainer: `input`, `target`, `target_mask` with the same values,
shapes and padding as `gm.data.Seq2SeqTask` (prompt = BOS + formatted user turn, response =
answer + `<end_of_turn>`; input and target are that sequence shifted by one; the mask is 1 on the
response; right padding with 0 to `max_length`). `seq2seq_arrays` is the numpy conversion; the
per-example reference is `gemma_seqio.template.make_seq2seq_fields`.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import seqio
import tensorflow as tf

from feature_converters import base, packing
from feature_converters.decoder_only import concat_inputs_targets
from gemma_seqio.special_tokens import BOS_ID

_Spec = seqio.FeatureConverter.FeatureSpec


def seq2seq_arrays(inputs: np.ndarray, input_lengths: np.ndarray, targets: np.ndarray,
                   target_lengths: np.ndarray, max_length: int, *, truncate: bool = False,
                   bos_id: int = BOS_ID) -> Dict[str, np.ndarray]:
  """gm.data fields of a batch: `input` [N, L], `target` [N, L, 1], `target_mask` bool [N, L, 1].

  >>> i, ni = packing.padded([[10, 11, 12]])                # prompt without its BOS
  >>> t, nt = packing.padded([[20, 21, 1]])
  >>> out = seq2seq_arrays(i, ni, t, nt, 8)
  >>> out["input"]
  array([[ 2, 10, 11, 12, 20, 21,  0,  0]], dtype=int32)
  >>> out["target"][..., 0]
  array([[10, 11, 12, 20, 21,  1,  0,  0]], dtype=int32)
  >>> out["target_mask"][..., 0].astype(int)
  array([[0, 0, 0, 1, 1, 1, 0, 0]])
  """
  num = inputs.shape[0]
  # Fields are len(prompt) + len(response) - 1 long, and the prompt is BOS + inputs.
  field_lengths = input_lengths + target_lengths
  if not truncate and num and field_lengths.max() > max_length:
    raise ValueError(
        f"Cannot pad sequence of length {int(field_lengths.max())}. Is longer than the max "
        f"length {max_length}. Set `truncate=True`.")
  concat, _ = concat_inputs_targets(inputs, input_lengths, targets, target_lengths)
  sequence = np.concatenate([np.full((num, 1), bos_id, np.int32), concat], axis=1)
  positions = np.arange(max_length)[None, :]
  target_mask = (positions >= input_lengths[:, None]) & (positions < field_lengths[:, None])
  return {
      "input": packing.trim_and_pad(sequence, field_lengths, max_length),
      "target": packing.trim_and_pad(concat, field_lengths, max_length)[..., None],
      "target_mask": target_mask[..., None],
  }


class GemmaSeq2SeqFeatureConverter(base.GemmaFeatureConverter):
  """`gm.data.Seq2SeqTask` fields: `input`, `target`, `target_mask`, with `max_length` the sum
  of the task feature lengths.

  A task example (no BOS in `inputs`; the converter adds it as the gemma library does)

      {"inputs": [106, 1645, 108, 10, 107, 108, 106, 2516, 108], "targets": [20, 21, 107]}

  with `task_feature_lengths={"inputs": 10, "targets": 4}` (max_length 14) becomes

            "input": [2, 106, 1645, 108, 10, 107, 108, 106, 2516, 108, 20, 21, 0, 0]
           "target": [[106], [1645], [108], [10], [107], [108], [106], [2516], [108],
                      [20], [21], [107], [0], [0]]
      "target_mask": [[F], [F], [F], [F], [F], [F], [F], [F], [F], [T], [T], [T], [F], [F]]

  A sequence longer than max_length raises (as `gm.data` does) unless `truncate=True`, which
  cuts it to max_length. No packing (the gemma library does not pack). Per-feature length
  checks are replaced by this whole-sequence check.
  """

  TASK_FEATURES = {"inputs": _Spec(dtype=tf.int32), "targets": _Spec(dtype=tf.int32)}
  MODEL_FEATURES = {
      "input": _Spec(dtype=tf.int32),
      "target": _Spec(dtype=tf.int32, rank=2),
      "target_mask": _Spec(dtype=tf.bool, rank=2),
  }
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, pack: bool = False, *, truncate: bool = False, **kwargs):
    if pack:
      raise ValueError("GemmaSeq2SeqFeatureConverter does not pack (gm.data.Seq2SeqTask does not)")
    self._truncate = truncate
    super().__init__(pack=False, **kwargs)

  @property
  def truncate(self) -> bool:
    return self._truncate

  def check_lengths(self, features, task_feature_lengths):
    # The budget is the whole sequence (checked in `seq2seq_arrays`), as in gm.data.
    return

  def convert_arrays(self, features, task_feature_lengths):
    inputs, input_lengths = features["inputs"]
    targets, target_lengths = features["targets"]
    return seq2seq_arrays(inputs, input_lengths, targets, target_lengths,
                          sum(task_feature_lengths.values()), truncate=self._truncate)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Dict[str, int]:
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    return {k: length for k in self.MODEL_FEATURES}
