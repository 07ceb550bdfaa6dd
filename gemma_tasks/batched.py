"""Per-batch functions over per-example datasets: one TF op per batch instead of per example.

A seqio preprocessor sees a dataset of single examples and must return one. Mapping a function
over each example runs every op once per example, and on short examples the per-op cost of
tf.data is most of the time. `over_batches` groups consecutive examples, runs `fn` once on the
group (string joins, SentencePiece, masks are all vectorised ops), and splits the result back
into the same examples in the same order:

>>> ds = tf.data.Dataset.from_tensor_slices({"text": ["a", "", "bc"]})
>>> def keep_non_empty(batch):
...   keep = tf.strings.length(batch["text"]) > 0
...   return {"text": tf.boolean_mask(batch["text"], keep)}
>>> [ex["text"].numpy() for ex in over_batches(ds, keep_non_empty, batch_size=2)]
[b'a', b'bc']

Features whose shape varies between examples are batched as ragged tensors and come back with
their per-example shape, so the element spec after `over_batches` is the one a per-example map
would give (`tf.Tensor` of shape `[None]` for a token vector, never a RaggedTensor).
"""
from __future__ import annotations

import weakref
from typing import Callable, Mapping, Optional, Sequence

import tensorflow as tf

from feature_converters import pipeline_options

# Large enough that the per-batch overhead vanishes, small enough that a batch of long
# documents stays a few MB.
BATCH_SIZE = 256

Batch = Mapping[str, "tf.Tensor | tf.RaggedTensor"]


def over_batches(dataset: tf.data.Dataset, fn: Callable[[Batch], Batch], *,
                 batch_size: int = BATCH_SIZE,
                 reads: Optional[Sequence[str]] = None) -> tf.data.Dataset:
  """`fn` on groups of up to `batch_size` examples; its output rows are the new examples, in order.

  `fn` gets a dict of tensors whose first dimension is the example, and returns one; it may
  drop rows (a filter) as long as every output feature has the same number of rows. It must
  treat rows independently: which examples share a group is not part of the contract.

  When `dataset` is itself what `over_batches` (or `register_batches`) returned, `fn` runs on
  those groups directly: two steps in a row (a task's formatting, then its tokenization) cost
  one split into examples instead of a split, a regroup and a split. `reads` (the features `fn`
  reads, when it drops the others) keeps a regroup from batching features nobody reads.
  """
  batches = _BATCHES.get(dataset)
  if batches is None:
    if reads is not None and set(dataset.element_spec) != set(reads):
      dataset = pipeline_options.inline_map(dataset, lambda ex: {k: ex[k] for k in reads})
    batches = _group(dataset, batch_size)
  mapped = batches.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return register_batches(mapped)


def _group(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  """Consecutive examples as one batch: ragged where shapes vary between examples.

  `ragged_batch` first maps every example to a ragged encoding, a per-example map that costs a
  thread hand-off (`feature_converters.pipeline_options`); when every feature has one fixed shape
  (scalars: the text of a JSONL row) plain `batch` gives the same dense batches without it.
  """
  specs = tf.nest.flatten(dataset.element_spec)
  if all(isinstance(s, tf.TensorSpec) and s.shape.is_fully_defined() for s in specs):
    return dataset.batch(batch_size)
  return dataset.ragged_batch(batch_size)


def register_batches(batches: tf.data.Dataset) -> tf.data.Dataset:
  """The examples of `batches` (dicts whose first dimension is the example), remembered as
  coming from `batches` so that a following `over_batches` can work on them as they are."""
  examples = batches.unbatch()
  if any(isinstance(s, tf.RaggedTensorSpec) for s in tf.nest.flatten(examples.element_spec)):
    # A ragged feature unbatches to a RaggedTensorSpec of ragged rank 0, whose values are plain
    # tensors: one light map, run in the pulling thread, restates the spec as the TensorSpec a
    # per-example map would give.
    examples = pipeline_options.inline_map(
        examples, lambda ex: tf.nest.map_structure(tf.identity, ex))
  _BATCHES[examples] = batches
  return examples


# The groups behind each dataset of examples that `register_batches` returned. Weak keys: an
# entry goes with its dataset, and only that very object (not a shuffled or cached copy of it,
# whose order or groups differ) is ever looked up.
_BATCHES: "weakref.WeakKeyDictionary[tf.data.Dataset, tf.data.Dataset]" = \
    weakref.WeakKeyDictionary()
