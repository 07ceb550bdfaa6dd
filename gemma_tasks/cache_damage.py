"""Which cache shard is damaged, when reading a cached task fails in the middle of a file.

A byte flipped inside a record keeps the shard's size, so the checks made when a split is opened
(`gemma_tasks.cache_integrity`) cannot see it; TF finds it while reading and raises
`DataLossError: corrupted record at 5442` without the file's name. Reading every shard up front
would cost a full pass over the data on every load, so the search happens on the failure path
only: `naming_damaged_shards` lets a `DataLossError` out of its block as a `CacheCorruptError`
naming the shard and the command that rebuilds the cache.

A QA task of two questions registered for the example (`gemma_tasks.builders.add_qa_task`, as
the quiz task), cached in a temporary directory, then one byte of its shard flipped:

>>> import json, os, shutil, tempfile
>>> import seqio
>>> from cache_scripts import cache_tasks
>>> from gemma_tasks import builders, sources
>>> tmp = tempfile.mkdtemp()
>>> with open(f"{tmp}/quiz.jsonl", "w") as f:
...   for q, a in [("Capital of France?", ["Paris"]), ("2 + 2 =", ["4", "four"])]:
...     print(json.dumps({"question": q, "answers": a}), file=f)
>>> task = builders.add_qa_task("doc_quiz", sources.JsonlDataSource(
...     {"validation": f"{tmp}/quiz.jsonl"}, fields={"question": str, "answers": list}))
>>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())
>>> _ = cache_tasks.cache_tasks(["doc_quiz"], f"{tmp}/cache", min_shards=1, min_source_shards=1)
>>> seqio.utils.set_global_cache_dirs([f"{tmp}/cache"])
>>> shard = f"{tmp}/cache/doc_quiz/validation.tfrecord-00000-of-00001"
>>> with open(shard, "r+b") as f:
...   data = bytearray(f.read()); data[len(data) // 2] ^= 1; _ = f.seek(0); _ = f.write(data)
>>> dataset = task.get_dataset({"inputs": 64, "targets": 64}, "validation", use_cached=True)
>>> with naming_damaged_shards("doc_quiz", "validation"):
...   for example in dataset.as_numpy_iterator():
...     pass
Traceback (most recent call last):
...
gemma_tasks.cache_integrity.CacheCorruptError: The cache of task 'doc_quiz' at .../cache/doc_quiz is
damaged:
  .../cache/doc_quiz/validation.tfrecord-00000-of-00001: ...corrupted record at ...
TF stopped reading it (DataLossError). Rebuild it:
  python -m cache_scripts.cache_tasks --tasks=doc_quiz --output_cache_dir=.../cache --overwrite
>>> seqio.TaskRegistry.remove("doc_quiz"); seqio.utils.set_global_cache_dirs(old_cache_dirs)
>>> shutil.rmtree(tmp)
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
