"""Input plumbing shared by `model.runner.train` and `model.runner.evaluate`: feature converter, user task
modules, cache directories, and the deterministic, resumable training stream.

>>> conv = feature_converter(pack=True)           # PrefixLM, BOS 2, packed rows
>>> ds = train_batches("gemma_quiz_qa", {"inputs": 64, "targets": 32}, batch_size=4, seed=0,
...                    start_batch=10)            # the 11th batch onward of the seed-0 stream
>>> sorted(next(ds.as_numpy_iterator()))[:2]
['decoder_causal_attention', 'decoder_input_tokens']
"""
from __future__ import annotations

import importlib
from typing import Iterable, Mapping, Optional, Sequence, Tuple

# Examples shuffled before packing (on top of seqio's 1,000): ~1/3 of LibreOffice's 28,870.
DEFAULT_SHUFFLE_BUFFER = 10_000
# Packed rows shuffled after best-fit packing (~6,000 LibreOffice examples).
ROW_SHUFFLE_BUFFER = 2048


def feature_converter(pack: bool, packing: str = "in_order"):
  """The Gemma PrefixLM feature converter (one BOS 2 per sequence; packed or not).

  `packing='in_order'` gives seqio's rows exactly; 'best_fit' fills rows more densely.

  >>> feature_converter(pack=False).pack
  False
  """
  import feature_converters  # pylint: disable=g-import-not-at-top
  return feature_converters.GemmaPrefixLMFeatureConverter(pack=pack, packing=packing)


def import_modules(modules: Iterable[str]) -> None:
  """Imports `gemma_tasks` and every `--module_imports` module (modules that register user tasks).

  >>> import_modules(["json"])
  >>> import_modules(["no_such_tasks_module"])
  Traceback (most recent call last):
  ImportError: --module_imports 'no_such_tasks_module' could not be imported: No module named 'no_such_tasks_module'
  """
  importlib.import_module("gemma_tasks")
  for name in modules or ():
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ImportError(f"--module_imports {name!r} could not be imported: {e}") from e


def add_cache_dirs(cache_dirs: Sequence[str]) -> None:
  """Makes `use_cached=True` look in these directories (seqio's global cache dirs)."""
  if cache_dirs:
    import seqio  # pylint: disable=g-import-not-at-top
    seqio.add_global_cache_dirs(list(cache_dirs))


def naming_damaged_cache(task: str, split: str, use_cached: bool):
  """A context in which a corrupt record of `task`'s cache is reported by shard file and fix
  command (`gemma_tasks.cache_damage`) instead of TF's bare `DataLossError`; a no-op on the fly.

  >>> with naming_damaged_cache("gemma_quiz_qa", "train", use_cached=True):  # doctest: +SKIP
  ...   next(train_batches("gemma_quiz_qa", {"inputs": 64, "targets": 32}, batch_size=4,
  ...                      seed=0, use_cached=True).as_numpy_iterator())
  CacheCorruptError: The cache of task 'gemma_quiz_qa' at /tmp/c/gemma_quiz_qa is damaged: ...
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  if not use_cached:
    return contextlib.nullcontext()
  from gemma_tasks import cache_damage  # pylint: disable=g-import-not-at-top
  return cache_damage.naming_damaged_shards(task, split)


def subtasks(name: str):
  """The seqio Tasks of a task or (nested) mixture name, with a helpful unknown-name error."""
  import seqio  # pylint: disable=g-import-not-at-top
  import gemma_tasks  # pylint: disable=g-import-not-at-top
  return seqio.get_subtasks(gemma_tasks.get_task_or_mixture(name))


def train_batches(task: str, task_feature_lengths: Mapping[str, int], *, batch_size: int,
                  seed: int, start_batch: int = 0, pack: bool = True, packing: str = "in_order",
                  use_cached: bool = False, split: str = "train",
                  shuffle_buffer_size: Optional[int] = DEFAULT_SHUFFLE_BUFFER,
                  shard: Optional[Tuple[int, int]] = None):
  """An endless, shuffled, packed stream of model-feature batches; batch k is the same for a
  given (task, lengths, batch_size, seed) whatever `start_batch` is.

  Resuming at step s skips the s batches already consumed (they are recomputed, not stored:
  a few seconds per thousand batches, and nothing in the pipeline has to be checkpointable).

  Examples are shuffled again (`shuffle_buffer_size`, seeded) before packing: seqio's task
  shuffle buffer is 1,000 examples, and the embedded sources are stored in file order (e.g.
  LibreOffice help file by help file), so without it a stretch of training sees one topic at a
  time and the loss jumps when the topic changes.

  `shard=(index, count)` reads only that seqio shard of the source (`seqio.ShardInfo`): on a
  multi-host mesh each process reads its own shards and feeds its own rows of every batch.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import gemma_tasks  # pylint: disable=g-import-not-at-top
  provider = gemma_tasks.get_task_or_mixture(task)
  if split not in provider.splits:
    raise ValueError(f"{task!r} has no {split!r} split (it has {list(provider.splits)})")
  lengths = dict(task_feature_lengths)
  # What seqio.get_dataset does, with an example-level shuffle between the task (or mixture)
  # and the converter.
  import seqio  # pylint: disable=g-import-not-at-top
  shard_info = seqio.ShardInfo(index=shard[0], num_shards=shard[1]) if shard else None
  kwargs = dict(split=split, shuffle=True, seed=seed, num_epochs=None,
                trim_output_features=True, shard_info=shard_info)
  if use_cached:
    # Through the cache checks (missing cache, damaged shards, stale fingerprint) whether or not
    # the task was registered as a `CheckedCacheTask` (e.g. a user's task from --module_imports).
    from gemma_tasks import cached  # pylint: disable=g-import-not-at-top
    ds = cached.checked_dataset(provider, lengths, **kwargs)
  else:
    ds = provider.get_dataset(lengths, **kwargs)
  if shuffle_buffer_size:
    # A buffer larger than the split only delays the first batch (it is filled before the
    # first example comes out).
    try:
      shuffle_buffer_size = min(shuffle_buffer_size, provider.num_input_examples(split) or
                                shuffle_buffer_size)
    except Exception:  # pylint: disable=broad-except  # sources that cannot count
      pass
    ds = ds.shuffle(shuffle_buffer_size, seed=seed)
  ds = feature_converter(pack, packing)(ds, task_feature_lengths=lengths)
  if pack and packing != "in_order" and shuffle_buffer_size:
    # Best-fit packing emits its rows grouped by length (a run of batches with one long
    # example per row, then rows of many short ones), which makes the loss jump; mixing the
    # rows restores batches that look alike.
    ds = ds.shuffle(min(ROW_SHUFFLE_BUFFER, max(16, shuffle_buffer_size // 4)), seed=seed + 1)
  ds = ds.batch(batch_size, drop_remainder=True)
  if start_batch:
    ds = ds.skip(start_batch)
  options = tf.data.Options()
  options.deterministic = True  # same order on every run, whatever the thread timing
  return ds.with_options(options).prefetch(2)


def max_vocab_size(task: str) -> Optional[int]:
  """Largest vocabulary size among a task's (or mixture's) output features."""
  sizes = [f.vocabulary.vocab_size for t in subtasks(task) for f in t.output_features.values()
           if getattr(f, "vocabulary", None) is not None]
  return max(sizes) if sizes else None
