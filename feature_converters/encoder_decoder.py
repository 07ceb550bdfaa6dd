"""Encoder-decoder converter: `GemmaEncDecFeatureConverter`.

Identical to `seqio.EncDecFeatureConverter(bos_id=2)`: `inputs` feed the encoder, `targets` the
decoder (shifted right with Gemma's BOS 2). `enc_dec_arrays` is the numpy conversion.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import seqio
import tensorflow as tf

from feature_converters import base, packing
from gemma_seqio.special_tokens import BOS_ID

_Spec = seqio.FeatureConverter.FeatureSpec


def enc_dec_arrays(inputs: np.ndarray, input_lengths: np.ndarray, targets: np.ndarray,
                   target_lengths: np.ndarray, inputs_length: int, targets_length: int, *,
                   pack: bool, bos_id: int = BOS_ID, assign=packing.pack_in_order
                   ) -> Dict[str, np.ndarray]:
  """EncDec conversion of a batch -> model rows.

  Packing places `inputs` and `targets` of an example in the same row (an example joins a row
  only if both fit); each feature has its own positions and segment ids.

  >>> i, ni = packing.padded([[7, 8, 5, 1], [8, 4, 9, 3, 1]])
  >>> t, nt = packing.padded([[3, 9, 1], [4, 1]])
  >>> out = enc_dec_arrays(i, ni, t, nt, 10, 7, pack=True)
  >>> out["encoder_segment_ids"]
  array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]], dtype=int32)
  >>> out["decoder_input_tokens"]
  array([[2, 3, 9, 2, 4, 2, 0]], dtype=int32)
  """
  if not pack:
    encoder = packing.trim_and_pad(inputs, input_lengths, inputs_length)
    decoder = packing.trim_and_pad(targets, target_lengths, targets_length)
    return {
        "encoder_input_tokens": encoder,
        "decoder_target_tokens": decoder,
        "decoder_input_tokens": packing.shift_right(decoder, None, bos_id),
        "decoder_loss_weights": (decoder != 0).astype(np.int32),
    }
  kept_in = packing.kept_lengths(inputs, input_lengths, inputs_length)
  kept_tg = packing.kept_lengths(targets, target_lengths, targets_length)
  rows, offsets, num_rows = assign(np.stack([kept_in, kept_tg]), [inputs_length, targets_length],
                                   max(inputs_length, targets_length))
  enc = packing.place(inputs, kept_in, rows, offsets[0], num_rows, inputs_length)
  dec = packing.place(targets, kept_tg, rows, offsets[1], num_rows, targets_length)
  return {
      "encoder_input_tokens": enc.tokens,
      "decoder_target_tokens": dec.tokens,
      "decoder_input_tokens": packing.shift_right(dec.tokens, dec.segment_ids, bos_id),
      "decoder_loss_weights": (dec.tokens != 0).astype(np.int32),
      "encoder_segment_ids": enc.segment_ids,
      "decoder_segment_ids": dec.segment_ids,
      "encoder_positions": enc.positions,
      "decoder_positions": dec.positions,
  }


class GemmaEncDecFeatureConverter(base.GemmaFeatureConverter):
  """Encoder-decoder features with Gemma's BOS (seqio's README table, bos 2 instead of 0).

  Task examples

      [{"inputs": [7, 8, 5, 1], "targets": [3, 9, 1]},
       {"inputs": [8, 4, 9, 3, 1], "targets": [4, 1]}]

  with `task_feature_lengths={"inputs": 10, "targets": 7}` and `pack=True` become one row:

       "encoder_input_tokens": [7, 8, 5, 1, 8, 4, 9, 3, 1, 0]
        "encoder_segment_ids": [1, 1, 1, 1, 2, 2, 2, 2, 2, 0]
          "encoder_positions": [0, 1, 2, 3, 0, 1, 2, 3, 4, 0]
      "decoder_target_tokens": [3, 9, 1, 4, 1, 0, 0]
       "decoder_input_tokens": [2, 3, 9, 2, 4, 2, 0]
       "decoder_loss_weights": [1, 1, 1, 1, 1, 0, 0]
        "decoder_segment_ids": [1, 1, 1, 2, 2, 0, 0]
          "decoder_positions": [0, 1, 2, 0, 1, 0, 0]
  """

  TASK_FEATURES = {"inputs": _Spec(dtype=tf.int32), "targets": _Spec(dtype=tf.int32)}
  MODEL_FEATURES = {
      "encoder_input_tokens": _Spec(dtype=tf.int32),
      "decoder_target_tokens": _Spec(dtype=tf.int32),
      "decoder_input_tokens": _Spec(dtype=tf.int32),
      "decoder_loss_weights": _Spec(dtype=tf.int32),
  }
  PACKING_FEATURE_DTYPES = {
      "encoder_segment_ids": tf.int32,
      "decoder_segment_ids": tf.int32,
      "encoder_positions": tf.int32,
      "decoder_positions": tf.int32,
  }

  def convert_arrays(self, features, task_feature_lengths):
    inputs, input_lengths = features["inputs"]
    targets, target_lengths = features["targets"]
    return enc_dec_arrays(inputs, input_lengths, targets, target_lengths,
                          task_feature_lengths["inputs"], task_feature_lengths["targets"],
                          pack=self.pack, assign=self.assign_rows)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Dict[str, int]:
    enc, dec = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    lengths = {"encoder_input_tokens": enc, "decoder_target_tokens": dec,
               "decoder_input_tokens": dec, "decoder_loss_weights": dec}
    if self.pack:
      lengths.update({"encoder_segment_ids": enc, "decoder_segment_ids": dec,
                      "encoder_positions": enc, "decoder_positions": dec})
    return lengths
