"""Which cache shard is damaged, when reading a cached task fails in the middle of a file.

A byte flipped inside a record keeps the shard's size, so the checks made when a split is opened
(`gemma_tasks.cache_integrity`) cannot see it; TF finds it while reading and raises
`DataLossError: corrupted record at 5442` without the file's name. Reading every shard up front
would cost a full pass over the data on every load, so the search happens on the failure path
only: `naming_damaged_shards` lets a `DataLossError` out of its block as a `CacheCorruptError`
naming the shard and the command that rebuilds the cache.

>>> with naming_damaged_shards("gemma_quiz_qa", "train"):
...   for batch in dataset.as_numpy_iterator():
...     ...
CacheCorruptError: The cache of task 'gemma_quiz_qa' at /tmp/c/gemma_quiz_qa is damaged:
  /tmp/c/gemma_quiz_qa/train.tfrecord-00001-of-00002: corrupted record at 5442
TF stopped reading it (DataLossError). Rebuild it:
  python -m cache_scripts.cache_tasks --tasks=gemma_quiz_qa --output_cache_dir=/tmp/c --overwrite
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from gemma_tasks import cache_integrity, cache_metadata

_STOPPED = "TF stopped reading it (DataLossError)."


def damaged_shards_error(task_or_mixture: str, split: str
                         ) -> Optional[cache_integrity.CacheCorruptError]:
  """A `CacheCorruptError` naming the unreadable shards of the caches of `task_or_mixture`'s
  tasks for `split`, or None if every shard reads back (the data loss came from elsewhere)."""
  import seqio  # pylint: disable=g-import-not-at-top
  messages = []
  for task in seqio.get_subtasks(seqio.get_mixture_or_task(task_or_mixture)):
    if split not in task.splits or not task.supports_caching or not task.cache_dir:
      continue
    cache_dir = task.cache_dir
    if cache_metadata.output_format_of(cache_dir, split) != "tfrecord":
      continue  # ArrayRecord errors are not TF's DataLossError
    files = cache_metadata.shard_files(cache_dir, split, "tfrecord")
    problems = cache_integrity.corrupt_records(files)
    if problems:
      messages.append(cache_integrity.damaged_message(cache_dir, problems, task.name, _STOPPED))
  return cache_integrity.CacheCorruptError("\n".join(messages)) if messages else None


@contextlib.contextmanager
def naming_damaged_shards(task_or_mixture: str, split: str) -> Iterator[None]:
  """Turns a `DataLossError` raised in the block into a `CacheCorruptError` naming the shard
  (see the module docstring); costs nothing while reading succeeds."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  # loaded by then
    if not isinstance(e, tf.errors.DataLossError):
      raise
    error = damaged_shards_error(task_or_mixture, split)
    if error is None:
      raise
    raise error from e
