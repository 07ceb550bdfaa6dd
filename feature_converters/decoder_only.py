"""Decoder-only converters: `GemmaLMFeatureConverter` and `GemmaPrefixLMFeatureConverter`.

Output is identical to `seqio.LMFeatureConverter(bos_id=2)` and
`seqio.PrefixLMFeatureConverter(bos_id=2)`, packed or not. The task features carry no BOS (see
DESIGN: `inputs` ends with `<start_of_turn>model\\n`, `targets` with `<end_of_turn>`); the shift
to the right puts BOS 2 at the start of every sequence (every segment when packed), so the model
sees exactly one BOS per sequence, at its start.

The numpy functions `lm_arrays` and `prefix_lm_arrays` are the whole conversion; the classes only
add the TF edge (`base.GemmaFeatureConverter`).
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import seqio
import tensorflow as tf

from feature_converters import base, packing
from gemma_seqio.special_tokens import BOS_ID

_Spec = seqio.FeatureConverter.FeatureSpec


def lm_arrays(targets: np.ndarray, target_lengths: np.ndarray, length: int, *, pack: bool,
              bos_id: int = BOS_ID, assign=packing.pack_in_order) -> Dict[str, np.ndarray]:
  """LM conversion of a batch (targets 0-padded [N, W] + lengths) -> model rows.

  >>> t, n = packing.padded([[3, 9, 1], [4, 1]])
  >>> out = lm_arrays(t, n, 6, pack=True)
  >>> out["decoder_target_tokens"], out["decoder_input_tokens"]
  (array([[3, 9, 1, 4, 1, 0]], dtype=int32), array([[2, 3, 9, 2, 4, 2]], dtype=int32))
  """
  if not pack:
    target = packing.trim_and_pad(targets, target_lengths, length)
    return {
        "decoder_target_tokens": target,
        "decoder_input_tokens": packing.shift_right(target, None, bos_id),
        "decoder_loss_weights": (target != 0).astype(np.int32),
    }
  kept = packing.kept_lengths(targets, target_lengths, length)
  rows, offsets, num_rows = assign(kept[None], [length], length)
  placed = packing.place(targets, kept, rows, offsets[0], num_rows, length)
  return {
      "decoder_target_tokens": placed.tokens,
      "decoder_input_tokens": packing.shift_right(placed.tokens, placed.segment_ids, bos_id),
      "decoder_loss_weights": (placed.tokens != 0).astype(np.int32),
      "decoder_segment_ids": placed.segment_ids,
      "decoder_positions": placed.positions,
  }


def concat_inputs_targets(inputs, input_lengths, targets, target_lengths):
  """Row-wise `inputs ++ targets` (0-padded) and its length.

  An example without targets gets one padding target, as seqio does (so that its last input
  token still has a position to predict from).

  >>> c, n = concat_inputs_targets(*packing.padded([[7, 8], [5]]), *packing.padded([[3], []]))
  >>> c, n
  (array([[7, 8, 3],
         [5, 0, 0]], dtype=int32), array([3, 2]))
  """
  num = inputs.shape[0]
  width = inputs.shape[1] + max(targets.shape[1], 1)
  out = np.zeros((num, width), dtype=np.int32)
  out[:, :inputs.shape[1]] = inputs
  ex, j = np.nonzero(np.arange(targets.shape[1])[None, :] < target_lengths[:, None])
  out[ex, input_lengths[ex] + j] = targets[ex, j]
  return out, input_lengths + np.maximum(target_lengths, 1)


def prefix_lm_arrays(inputs: np.ndarray, input_lengths: np.ndarray, targets: np.ndarray,
                     target_lengths: np.ndarray, length: int, *, pack: bool,
                     loss_on_targets_only: bool = True, bos_id: int = BOS_ID,
                     assign=packing.pack_in_order) -> Dict[str, np.ndarray]:
  """PrefixLM conversion of a batch -> model rows (`length` = inputs length + targets length).

  seqio packs three features together: the concatenated tokens, and the inputs width (and width
  + 1) repeated over the example. The widths of an example with no targets are one longer than
  its tokens (the padding target is dropped from the tokens but not from the widths); that
  shifts the widths of later examples in the row, and we keep that behaviour so rows stay
  identical.

  >>> i, ni = packing.padded([[7, 8, 5, 1], [8, 4, 9, 3, 1]])
  >>> t, nt = packing.padded([[3, 9, 1], [4, 1]])
  >>> out = prefix_lm_arrays(i, ni, t, nt, 15, pack=True)
  >>> out["decoder_loss_weights"]
  array([[0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]], dtype=int32)
  >>> out["decoder_causal_attention"]
  array([[1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]], dtype=int32)
  """
  concat, concat_lengths = concat_inputs_targets(inputs, input_lengths, targets, target_lengths)
  width = input_lengths.astype(np.int32)
  if not pack:
    target = packing.trim_and_pad(concat, concat_lengths, length)
    positions = np.arange(length, dtype=np.int32)[None, :]
    covered = positions < np.minimum(concat_lengths, length)[:, None]
    inputs_width = np.where(covered, width[:, None], 0)
    inputs_width_add_pos = np.where(covered, width[:, None] + 1, 0)
    segment_ids = None
  else:
    kept = packing.kept_lengths(concat, concat_lengths, length)
    # The width features are never 0 (seqio swaps a width of 0 for -1 before packing), so all of
    # their min(length, concat length) entries are kept.
    width_kept = np.minimum(concat_lengths, length)
    rows, offsets, num_rows = assign(np.stack([kept, width_kept]), [length, length], length)
    placed = packing.place(concat, kept, rows, offsets[0], num_rows, length)
    target, positions, segment_ids = placed.tokens, placed.positions, placed.segment_ids
    inputs_width = packing.place_constant(width, width_kept, rows, offsets[1], num_rows, length)
    inputs_width_add_pos = packing.place_constant(width + 1, width_kept, rows, offsets[1],
                                                  num_rows, length)
  non_padding = target != 0
  if loss_on_targets_only:
    # 1 on inputs (positions before the width) XOR 1 on non-padding = 1 on targets only.
    loss = np.logical_xor(positions < inputs_width, non_padding)
  else:
    loss = non_padding
  out = {
      "decoder_target_tokens": target,
      "decoder_input_tokens": packing.shift_right(target, segment_ids, bos_id),
      "decoder_loss_weights": loss.astype(np.int32),
      # Full attention up to and including the position that reads the last input token.
      "decoder_causal_attention": (positions < inputs_width_add_pos).astype(np.int32),
  }
  if pack:
    out["decoder_segment_ids"] = segment_ids
    out["decoder_positions"] = positions
  return out


class GemmaLMFeatureConverter(base.GemmaFeatureConverter):
  """Targets-only language model features, with Gemma's BOS.

  Task examples (note: no BOS; `<end_of_turn>`=107 ends each sequence)

      [{"targets": [3, 9, 107]}, {"targets": [4, 107]}]

  with `task_feature_lengths={"targets": 6}` and `pack=True` become one row

      "decoder_target_tokens": [3, 9, 107, 4, 107, 0]
       "decoder_input_tokens": [2, 3,   9, 2,   4, 2]
       "decoder_loss_weights": [1, 1,   1, 1,   1, 0]
          "decoder_positions": [0, 1,   2, 0,   1, 0]
        "decoder_segment_ids": [1, 1,   1, 2,   2, 0]

  (the 2 in the padding position is where seqio's shift puts it too; its loss weight and
  segment id are 0). With `pack=False` each example is one row, e.g. the first:

      "decoder_target_tokens": [3, 9, 107, 0, 0, 0]
       "decoder_input_tokens": [2, 3,   9, 107, 0, 0]
       "decoder_loss_weights": [1, 1,   1, 0, 0, 0]
  """

  TASK_FEATURES = {"targets": _Spec(dtype=tf.int32)}
  MODEL_FEATURES = {
      "decoder_target_tokens": _Spec(dtype=tf.int32),
      "decoder_input_tokens": _Spec(dtype=tf.int32),
      "decoder_loss_weights": _Spec(dtype=tf.int32),
  }
  PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

  def convert_arrays(self, features, task_feature_lengths):
    targets, lengths = features["targets"]
    return lm_arrays(targets, lengths, task_feature_lengths["targets"], pack=self.pack,
                     assign=self.assign_rows)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Dict[str, int]:
    length = task_feature_lengths["targets"]
    names = list(self.MODEL_FEATURES) + (list(self.PACKING_FEATURE_DTYPES) if self.pack else [])
    return {k: length for k in names}


class GemmaPrefixLMFeatureConverter(base.GemmaFeatureConverter):
  """Prefix LM features for Gemma: `inputs ++ targets` in one decoder sequence, BOS 2 first.

  Task examples, as `gemma_tasks` produces them (no BOS; here 106/107 are the turn markers)

      [{"inputs": [106, 8, 5, 106], "targets": [3, 9, 107]},
       {"inputs": [106, 4, 9, 3, 106], "targets": [4, 107]}]

  with `task_feature_lengths={"inputs": 7, "targets": 8}` and `pack=True` become one row of 15:

      "decoder_target_tokens": [106, 8, 5, 106, 3, 9, 107, 106, 4, 9, 3, 106,   4, 107, 0]
       "decoder_input_tokens": [  2, 106, 8, 5, 106, 3, 9,   2, 106, 4, 9, 3, 106,   4, 2]
       "decoder_loss_weights": [  0, 0, 0,   0, 1, 1,   1,   0, 0, 0, 0,   0,   1,   1, 0]
          "decoder_positions": [  0, 1, 2,   3, 4, 5,   6,   0, 1, 2, 3,   4,   5,   6, 0]
        "decoder_segment_ids": [  1, 1, 1,   1, 1, 1,   1,   2, 2, 2, 2,   2,   2,   2, 0]
   "decoder_causal_attention": [  1, 1, 1,   1, 1, 0,   0,   1, 1, 1, 1,   1,   1,   0, 0]

  `decoder_causal_attention` is 1 on the inputs plus one position (the one that reads the last
  input token and predicts the first target); the loss is on targets only
  (`loss_on_targets_only=True`, the default). With `pack=False` the first example becomes

      "decoder_target_tokens": [106, 8, 5, 106, 3, 9, 107, 0, ...]   (15 long)
       "decoder_input_tokens": [  2, 106, 8, 5, 106, 3, 9, 107, 0, ...]
       "decoder_loss_weights": [  0, 0, 0,   0, 1, 1,   1, 0, ...]
   "decoder_causal_attention": [  1, 1, 1,   1, 1, 0,   0, 0, ...]

  Identical to `seqio.PrefixLMFeatureConverter(bos_id=2)` in every case (tested), a lot faster.
  `packing="best_fit"` fills rows more densely (different rows, same segments).
  """

  TASK_FEATURES = {"inputs": _Spec(dtype=tf.int32), "targets": _Spec(dtype=tf.int32)}
  MODEL_FEATURES = {
      "decoder_target_tokens": _Spec(dtype=tf.int32),
      "decoder_input_tokens": _Spec(dtype=tf.int32),
      "decoder_loss_weights": _Spec(dtype=tf.int32),
      "decoder_causal_attention": _Spec(dtype=tf.int32),
  }
  PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

  def __init__(self, pack: bool = True, loss_on_targets_only: bool = True, **kwargs):
    self._loss_on_targets_only = loss_on_targets_only
    super().__init__(pack=pack, **kwargs)

  @property
  def loss_on_targets_only(self) -> bool:
    return self._loss_on_targets_only

  def chunk_size(self, task_feature_lengths):
    # seqio packs the concatenation, whose length is the sum.
    return sum(task_feature_lengths.values())

  def convert_arrays(self, features, task_feature_lengths):
    inputs, input_lengths = features["inputs"]
    targets, target_lengths = features["targets"]
    return prefix_lm_arrays(inputs, input_lengths, targets, target_lengths,
                            sum(task_feature_lengths.values()), pack=self.pack,
                            loss_on_targets_only=self._loss_on_targets_only,
                            assign=self.assign_rows)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Dict[str, int]:
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    names = list(self.MODEL_FEATURES) + (list(self.PACKING_FEATURE_DTYPES) if self.pack else [])
    return {k: length for k in names}
