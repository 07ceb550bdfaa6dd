"""Packing on plain numpy arrays: which row and offset each example gets, and the row contents.

No TensorFlow here. The converters call these functions on whole batches (thousands of examples
at once) instead of running a `tf.while_loop` per example as `seqio.utils.trim_and_pack_dataset`
does; the rows they produce are the same.

A batch of variable-length sequences is a padded matrix plus the true lengths:

>>> tokens, lengths = padded([[3, 9, 1], [4, 1], [7]])
>>> tokens
array([[3, 9, 1],
       [4, 1, 0],
       [7, 0, 0]], dtype=int32)
>>> lengths
array([3, 2, 1])

In-order packing (seqio's rule): an example goes into the current row if it fits in every
feature, else it opens a new row; every `chunk_size` examples the packer starts afresh (seqio
packs each `padded_batch` of max(lengths) examples separately, so its rows never span two such
batches):

>>> rows, offsets, num_rows = pack_in_order(lengths[None], capacities=[4], chunk_size=4)
>>> rows.tolist(), offsets.tolist(), num_rows         # [3 | 2 1]: the 2 does not fit after the 3
([0, 1, 1], [[0, 0, 2]], 2)

Writing rows: `place` copies every example's tokens to its row and offset and returns the
tokens, the positions within the original example and seqio's segment ids:

>>> rows, offsets, n = pack_in_order(lengths[None], [6], chunk_size=6)
>>> out = place(tokens, lengths, rows, offsets[0], n, 6)
>>> out.tokens
array([[3, 9, 1, 4, 1, 7]], dtype=int32)
>>> out.positions
array([[0, 1, 2, 0, 1, 0]], dtype=int32)
>>> out.segment_ids
array([[1, 1, 1, 2, 2, 3]], dtype=int32)
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

# Padding value the TF edge uses in `padded_batch`, so that true lengths survive batching even
# for sequences that contain 0 (which seqio's packer treats specially, see `kept_lengths`).
SENTINEL = np.iinfo(np.int32).min


def padded(sequences: Sequence[Sequence[int]], width: Optional[int] = None
           ) -> Tuple[np.ndarray, np.ndarray]:
  """List of int sequences -> (int32 matrix padded with 0, lengths).

  >>> padded([[5], []], width=3)
  (array([[5, 0, 0],
         [0, 0, 0]], dtype=int32), array([1, 0]))
  """
  lengths = np.array([len(s) for s in sequences], dtype=np.int64)
  width = int(lengths.max(initial=0)) if width is None else width
  out = np.zeros((len(sequences), width), dtype=np.int32)
  for i, s in enumerate(sequences):
    out[i, :len(s)] = s
  return out, lengths


def from_sentinel_padded(batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Matrix padded with `SENTINEL` (the TF edge's `padded_batch`) -> (0-padded matrix, lengths).

  >>> from_sentinel_padded(np.array([[5, 0, SENTINEL], [SENTINEL] * 3]))
  (array([[5, 0, 0],
         [0, 0, 0]], dtype=int32), array([2, 0]))
  """
  valid = batch != SENTINEL
  return np.where(valid, batch, 0).astype(np.int32), valid.sum(axis=1).astype(np.int64)


def trim_and_pad(tokens: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
  """Every row cut or zero-padded to `length` (seqio's `trim_and_pad_dataset`, on a batch).

  >>> trim_and_pad(*padded([[1, 2, 3], [4]]), 2)
  array([[1, 2],
         [4, 0]], dtype=int32)
  """
  out = np.zeros((tokens.shape[0], length), dtype=np.int32)
  width = min(length, tokens.shape[1])
  out[:, :width] = tokens[:, :width]
  # Anything at or past the true length is padding (the caller's matrix may hold other values).
  out[np.arange(length)[None, :] >= lengths[:, None]] = 0
  return out


def kept_lengths(tokens: np.ndarray, lengths: np.ndarray, capacity: int) -> np.ndarray:
  """How many leading tokens of each example seqio's packer keeps.

  seqio trims to `capacity`, pads the batch with 0 and then keeps the first *count of non-zero*
  tokens. For real Gemma data (no PAD inside a sequence) that is just min(length, capacity); a 0
  inside a sequence shortens what is kept, and we reproduce that too:

  >>> kept_lengths(*padded([[5, 6, 7], [5, 0, 7], [0]]), capacity=2)
  array([2, 1, 0])
  """
  width = min(capacity, tokens.shape[1])
  head = tokens[:, :width]
  inside = np.arange(width)[None, :] < np.minimum(lengths, capacity)[:, None]
  return np.count_nonzero((head != 0) & inside, axis=1).astype(np.int64)


def pack_in_order(lengths: np.ndarray, capacities: Sequence[int], chunk_size: int
                  ) -> Tuple[np.ndarray, np.ndarray, int]:
  """seqio's greedy in-order packing, as an assignment of examples to rows.

  `lengths` is [K, N]: the kept length of each of K features for each of N examples (already
  trimmed to `capacities`). An example joins the current row if, for every feature, the row's
  fill plus its length stays within the capacity; otherwise the row is closed and a new one
  starts. A new row also starts at every multiple of `chunk_size`, and every chunk yields at
  least one row (an all-padding row if all its examples are empty), as in seqio.

  Returns (row [N], offset [K, N], number of rows).

  >>> rows, offsets, n = pack_in_order(np.array([[3, 2, 4, 1, 2]]), [5], chunk_size=3)
  >>> rows.tolist(), offsets.tolist(), n
  ([0, 0, 1, 2, 2], [[0, 3, 0, 0, 1]], 3)
  """
  lengths = np.asarray(lengths, dtype=np.int64)
  k_features, n = lengths.shape
  caps = [int(c) for c in capacities]
  rows = np.empty(n, dtype=np.int64)
  offsets = np.empty((k_features, n), dtype=np.int64)
  lens = lengths.tolist()
  row = -1
  # One tight loop per feature count: this is the only per-example Python in the pipeline.
  if k_features == 1:
    (l0,), (c0,) = lens, caps
    off0 = [0] * n
    rows_l = [0] * n
    for start in range(0, n, chunk_size):
      row += 1
      f0 = 0
      for i in range(start, min(n, start + chunk_size)):
        a = l0[i]
        if f0 + a > c0:
          row += 1
          f0 = 0
        rows_l[i] = row
        off0[i] = f0
        f0 += a
    offsets[0] = off0
  elif k_features == 2:
    (l0, l1), (c0, c1) = lens, caps
    off0, off1 = [0] * n, [0] * n
    rows_l = [0] * n
    for start in range(0, n, chunk_size):
      row += 1
      f0 = f1 = 0
      for i in range(start, min(n, start + chunk_size)):
        a, b = l0[i], l1[i]
        if f0 + a > c0 or f1 + b > c1:
          row += 1
          f0 = f1 = 0
        rows_l[i] = row
        off0[i], off1[i] = f0, f1
        f0 += a
        f1 += b
    offsets[0], offsets[1] = off0, off1
  else:
    rows_l = [0] * n
    offs = [[0] * n for _ in range(k_features)]
    for start in range(0, n, chunk_size):
      row += 1
      fill = [0] * k_features
      for i in range(start, min(n, start + chunk_size)):
        if any(fill[k] + lens[k][i] > caps[k] for k in range(k_features)):
          row += 1
          fill = [0] * k_features
        rows_l[i] = row
        for k in range(k_features):
          offs[k][i] = fill[k]
          fill[k] += lens[k][i]
    offsets[:] = offs
  rows[:] = rows_l
  return rows, offsets, row + 1


def pack_best_fit(lengths: np.ndarray, capacities: Sequence[int], buffer_size: int
                  ) -> Tuple[np.ndarray, np.ndarray, int]:
  """Best-fit-decreasing packing within buffers of `buffer_size` examples (denser than in-order).

  Inside each buffer the examples are taken longest first (by their longest feature relative to
  its capacity) and each goes to the open row with the least room left that still fits it in
  every feature, or opens a new row. No example is cut or split. Rows never span two buffers,
  so the output order follows the input order at buffer granularity. Examples that are empty in
  every feature occupy nothing and are placed nowhere (their row is -1).

  Same return value as `pack_in_order`.

  >>> rows, offsets, n = pack_best_fit(np.array([[3, 4, 2, 1]]), [5], buffer_size=4)
  >>> rows.tolist(), offsets.tolist(), n     # rows [4 1] [3 2]; in order: [3] [4] [2 1]
  ([1, 0, 1, 0], [[0, 0, 3, 4]], 2)
  """
  lengths = np.asarray(lengths, dtype=np.int64)
  k_features, n = lengths.shape
  caps = np.asarray(capacities, dtype=np.int64)
  rows = np.full(n, -1, dtype=np.int64)
  offsets = np.zeros((k_features, n), dtype=np.int64)
  # The feature that fills up first decides; the others are checked on the candidate row.
  relative = lengths / np.maximum(caps, 1)[:, None]
  key_feature = int(np.argmax(relative.sum(axis=1))) if n else 0
  cap_key = int(caps[key_feature])
  lens = lengths.T.tolist()
  num_rows = 0
  for start in range(0, n, buffer_size):
    stop = min(n, start + buffer_size)
    order = start + np.lexsort((np.arange(stop - start), -relative.max(axis=0)[start:stop]))
    # Open rows sorted by the room left in the key feature: (room, row id).
    open_rows = []
    fill = {}
    for i in order.tolist():
      need = lens[i]
      if not any(need):
        continue
      need_key = need[key_feature]
      pos = bisect.bisect_left(open_rows, (need_key, -1))
      chosen = None
      while pos < len(open_rows):
        room, r = open_rows[pos]
        f = fill[r]
        if all(f[k] + need[k] <= caps[k] for k in range(k_features)):
          chosen = pos
          break
        pos += 1
      if chosen is None:
        r = num_rows
        num_rows += 1
        fill[r] = [0] * k_features
      else:
        room, r = open_rows.pop(chosen)
      f = fill[r]
      rows[i] = r
      for k in range(k_features):
        offsets[k, i] = f[k]
        f[k] += need[k]
      room = cap_key - f[key_feature]
      if room > 0:
        bisect.insort(open_rows, (room, r))
  return rows, offsets, num_rows


@dataclasses.dataclass(frozen=True)
class Placed:
  """Packed rows of one feature: tokens, positions in the original example, segment ids."""
  tokens: np.ndarray
  positions: np.ndarray
  segment_ids: np.ndarray


def place(tokens: np.ndarray, lengths: np.ndarray, rows: np.ndarray, offsets: np.ndarray,
          num_rows: int, capacity: int) -> Placed:
  """Write the first `lengths[i]` tokens of example i at (`rows[i]`, `offsets[i]`).

  Segment ids follow seqio's definition exactly: a running count of position-0 tokens along the
  row, zeroed wherever the token is 0.
  """
  out = np.zeros((num_rows, capacity), dtype=np.int32)
  positions = np.zeros((num_rows, capacity), dtype=np.int32)
  width = min(tokens.shape[1], capacity)
  lengths = np.minimum(lengths, width)
  take = np.arange(width)[None, :] < lengths[:, None]
  ex, j = np.nonzero(take)
  r, c = rows[ex], offsets[ex] + j
  out[r, c] = tokens[:, :width][take]
  positions[r, c] = j
  return Placed(out, positions, segment_ids_of(out, positions))


def place_constant(values: np.ndarray, lengths: np.ndarray, rows: np.ndarray, offsets: np.ndarray,
                   num_rows: int, capacity: int) -> np.ndarray:
  """Like `place` for a feature that repeats one value per example (e.g. the inputs width)."""
  out = np.zeros((num_rows, capacity), dtype=np.int32)
  lengths = np.minimum(lengths, capacity)
  ex = np.repeat(np.arange(len(lengths)), lengths)
  j = np.arange(len(ex)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  out[rows[ex], offsets[ex] + j] = values[ex]
  return out


def segment_ids_of(tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """seqio's segment ids: cumsum(positions == 0) * (tokens != 0), per row.

  >>> segment_ids_of(np.array([[4, 1, 5, 0]]), np.array([[0, 1, 0, 0]]))
  array([[1, 1, 2, 0]], dtype=int32)
  """
  return (np.cumsum(positions == 0, axis=1) * (tokens != 0)).astype(np.int32)


def shift_right(tokens: np.ndarray, segment_ids: Optional[np.ndarray], bos_id: int) -> np.ndarray:
  """Decoder inputs: targets shifted right by one, `bos_id` at the start of every segment.

  Same as `seqio.utils.make_autoregressive_inputs`, including where it puts BOS: position 0, and
  with segment ids every position whose segment id differs from the previous one (which includes
  the first padding position after a packed row's last segment).

  >>> shift_right(np.array([[3, 9, 1, 4, 1, 0]]), np.array([[1, 1, 1, 2, 2, 0]]), 2)
  array([[2, 3, 9, 2, 4, 2]], dtype=int32)
  >>> shift_right(np.array([[3, 9, 1, 0]]), None, 2)
  array([[2, 3, 9, 1]], dtype=int32)
  """
  shifted = np.empty_like(tokens, dtype=np.int32)
  shifted[:, 1:] = tokens[:, :-1]
  shifted[:, :1] = bos_id
  if segment_ids is not None:
    previous = np.zeros_like(segment_ids)
    previous[:, 1:] = segment_ids[:, :-1]
    shifted = np.where(segment_ids == previous, shifted, bos_id).astype(np.int32)
  return shifted


def fill_ratio(tokens: np.ndarray) -> float:
  """Share of non-padding positions in a [rows, length] matrix."""
  return float(np.count_nonzero(tokens)) / max(tokens.size, 1)
