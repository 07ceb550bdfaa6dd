"""The checked `use_cached=True` path, for caches written by `cache_scripts.cache_tasks`.

seqio's `Task` has two methods for the cached path; `CheckedCacheTask` overrides them, and the
tasks of `gemma_tasks` are registered with `task_cls=CheckedCacheTask` (seqio's extension point;
no other Task and nothing in seqio is changed):

  * `assert_cached`: a Task with no completed cache raises `CacheNotFoundError` (an
    `AssertionError`, as seqio's own) naming the task, every directory searched and the command
    that builds the cache, instead of seqio's "'x' does not exist in any of the task cache
    directories."
  * `_get_cached_source`: before reading, the split's files are checked against what the cache
    says was written (`gemma_tasks.cache_integrity`: every shard present, with its recorded
    size); a deleted, emptied or cut shard or a cut `info.<split>.json` raises
    `CacheCorruptError` naming the file and the command that rebuilds the cache. Then the
    fingerprint stored by `cache_scripts.cache_tasks` in the cache's `COMPLETED` file
    (`gemma_tasks.cache_metadata`) is compared with the Task as registered now
    (`gemma_tasks.cache_fingerprint`); a cache written with another vocabulary, other
    preprocessors, other source data or other output features raises `CacheFingerprintError`
    naming what changed. Then the data is read by `FastCachedDataSource`.

Any other Task gets the same when asked, without changing the task or its registration:
`checked_dataset(task_or_mixture, sequence_length, split, ...)` (its `get_dataset(use_cached=True)`
through these checks), or `check_cache(task, split)` / `cached_source(task, split)` alone.

Typical use: plain seqio calls on a task registered the `gemma_tasks` way, here a QA task of two
questions (`gemma_tasks.builders.add_qa_task`, as the quiz task) cached in a temporary directory:

>>> import json, os, shutil, tempfile
>>> import feature_converters
>>> from cache_scripts import cache_tasks
>>> from gemma_tasks import builders, sources
>>> tmp = tempfile.mkdtemp()
>>> with open(f"{tmp}/quiz.jsonl", "w") as f:
...   for q, a in [("Capital of France?", ["Paris"]), ("2 + 2 =", ["4", "four"])]:
...     print(json.dumps({"question": q, "answers": a}), file=f)
>>> _ = builders.add_qa_task("doc_quiz", sources.JsonlDataSource(
...     {"validation": f"{tmp}/quiz.jsonl"}, fields={"question": str, "answers": list}))
>>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())
>>> _ = cache_tasks.cache_tasks(["doc_quiz"], f"{tmp}/cache", min_shards=1, validate=False)
>>> seqio.utils.set_global_cache_dirs([f"{tmp}/cache"])
>>> ds = seqio.get_dataset("doc_quiz", {"inputs": 32, "targets": 8}, dataset_split="validation",
...                        use_cached=True, shuffle=False,
...                        feature_converter=feature_converters.GemmaPrefixLMFeatureConverter(pack=True))
>>> batch = next(ds.as_numpy_iterator())
>>> {k: v.shape for k, v in batch.items()}      # 32 + 8 tokens per row, the two questions packed
{'decoder_causal_attention': (40,), 'decoder_input_tokens': (40,), 'decoder_loss_weights': (40,),
 'decoder_positions': (40,), 'decoder_segment_ids': (40,), 'decoder_target_tokens': (40,)}
>>> sorted(set(batch["decoder_segment_ids"].tolist()))        # 0: padding
[0, 1, 2]
>>> seqio.TaskRegistry.remove("doc_quiz"); seqio.utils.set_global_cache_dirs(old_cache_dirs)
>>> shutil.rmtree(tmp)

Why `FastCachedDataSource`: seqio's `_CachedDataSource` parses every record on its own
(`tf.io.parse_single_example` inside each file's reader, then two more per-example maps). We read
the raw records with seqio's own `FileDataSource` (same files, same sharding, same file
shuffling, same interleave order) and parse them 256 at a time with `tf.io.parse_example`.
`benchmarks/cache.py` measures it next to seqio's reader and the on-the-fly pipeline (figures in
the README): behind the packed Gemma converter the cached read is about twice the on-the-fly
rate and ~15% above seqio's reader. Where a cached read looks "barely faster" it is one of two
things no reader removes: examples pulled one at a time in Python (all three paths then run at
the speed of the per-element conversion to numpy, ~150 us), or a single pass over a small split,
where `seqio.get_dataset`'s fixed set-up (graph building, converter tracing) dominates; build
the dataset once and iterate it.
The examples and their order are the same as seqio's reader gives. Caches written with
`--output_format=arrayrecord` are read here too (seqio 0.0.20's reader only knows TFRecord).

Caches without our metadata (written by seqio's own `cache_tasks_main`) still load, with a
warning that they cannot be checked. `GEMMA_SEQIO_IGNORE_CACHE_FINGERPRINT=1` turns a mismatch
into a warning, for when you know the change does not affect the cached data.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from typing import Dict, List, Mapping, Optional

import numpy as np
from packaging import version as version_lib
import seqio
import tensorflow as tf
from seqio import utils as seqio_utils

from feature_converters import pipeline_options
from gemma_tasks import batched
from gemma_tasks import cache_fingerprint
from gemma_tasks import cache_integrity
from gemma_tasks import cache_metadata
from gemma_tasks.mixture_class import GemmaMixture
from gemma_tasks.cache_integrity import CacheCorruptError  # noqa: F401  (part of this API)

IGNORE_FINGERPRINT_ENV = "GEMMA_SEQIO_IGNORE_CACHE_FINGERPRINT"
PARSE_BATCH_SIZE = 256

_LOGGER = logging.getLogger(__name__)
_lock = threading.Lock()
# Task -> cache dirs whose fingerprint matched it, so each get_dataset call does not rehash. Keyed
# by the task object itself, weakly: the mark goes with the object. An `id()` would outlive it,
# and CPython hands a freed address (= id) to new objects, e.g. a task re-registered with other
# preprocessors, which would then skip its check and read the stale cache.
_checked: "weakref.WeakKeyDictionary[seqio.Task, set]" = weakref.WeakKeyDictionary()


class CacheNotFoundError(AssertionError):
  """`use_cached=True` but no directory holds a completed cache of the task."""


class CacheFingerprintError(ValueError):
  """The cache was written from another vocabulary / preprocessors / source / features."""


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def searched_dirs(task: seqio.Task) -> List[str]:
  """The directories seqio looks in for `task` (global cache dirs + task dir name)."""
  return [os.path.join(d, seqio_utils.get_task_dir_from_name(task.name))
          for d in seqio_utils.get_global_cache_dirs()]


def missing_cache_message(task: seqio.Task) -> str:
  dirs = searched_dirs(task)
  where = "\n".join(f"  {d}" for d in dirs) or "  (none: seqio.add_global_cache_dirs was not called)"
  return (f"Task {task.name!r} has no completed cache (a directory with a COMPLETED file). "
          f"Searched:\n{where}\nBuild it with:\n  python -m cache_scripts.cache_tasks "
          f"--tasks={task.name} --output_cache_dir=DIR\nand add DIR with "
          "seqio.add_global_cache_dirs([DIR]), or load with use_cached=False.")


def check_fingerprint(task: seqio.Task, cache_dir: str) -> None:
  """Raises `CacheFingerprintError` if `cache_dir` was written for another version of `task`.

  Only `COMPLETED` is read; here it is written by hand as `cache_tasks` writes it:

  >>> import shutil, tempfile, gemma_tasks
  >>> task = seqio.get_mixture_or_task("gemma_quiz_qa")
  >>> fp = cache_fingerprint.task_fingerprint(task)
  >>> cache_dir = os.path.join(tempfile.mkdtemp(), "gemma_quiz_qa"); os.mkdir(cache_dir)
  >>> def write_completed(fingerprint):
  ...   with open(os.path.join(cache_dir, "COMPLETED"), "w") as f:
  ...     _ = f.write(cache_metadata.completed_contents("tfrecord", {task.name: fingerprint}))
  >>> write_completed(fp)
  >>> check_fingerprint(task, cache_dir)          # written for the task as it is: nothing raised
  >>> write_completed({"fingerprint": "0" * 64,
  ...                  "components": {**fp["components"], "vocabulary[targets]": "0" * 64}})
  >>> check_fingerprint(task, cache_dir)
  Traceback (most recent call last):
  ...
  gemma_tasks.cached.CacheFingerprintError: The cache of task 'gemma_quiz_qa' at .../gemma_quiz_qa
  was written from a different task definition; changed: vocabulary[targets]. Using it would feed
  data that the current task would not produce. Rebuild it:
    python -m cache_scripts.cache_tasks --tasks=gemma_quiz_qa --output_cache_dir=... --overwrite
  (or set GEMMA_SEQIO_IGNORE_CACHE_FINGERPRINT=1 if you know the change does not affect the cached
  data).
  >>> shutil.rmtree(os.path.dirname(cache_dir))
  """
  meta = cache_metadata.read_metadata(cache_dir)
  if meta is None:
    _LOGGER.warning(
        "Cache of %r at %s has no gemma-seqio fingerprint (written by seqio's own "
        "cache_tasks_main?); it cannot be checked against the current vocabulary and "
        "preprocessors. Rebuild it with `python -m cache_scripts.cache_tasks --overwrite` to "
        "get the check.", task.name, cache_dir)
    return
  cached = meta.get("tasks", {}).get(task.name)
  if cached is None:
    raise CacheFingerprintError(
        f"The cache at {cache_dir} has no fingerprint for task {task.name!r} (it lists "
        f"{sorted(meta.get('tasks', {}))}); it was written for another task. Rebuild with "
        f"--overwrite.")
  current = cache_fingerprint.task_fingerprint(task)
  if cached.get("fingerprint") == current["fingerprint"]:
    return
  changed = cache_fingerprint.diff_components(cached.get("components", {}), current["components"])
  message = (
      f"The cache of task {task.name!r} at {cache_dir} was written from a different task "
      f"definition; changed: {', '.join(changed) or 'unknown'}. Using it would feed data that "
      "the current task would not produce. Rebuild it:\n  python -m cache_scripts.cache_tasks "
      f"--tasks={task.name} --output_cache_dir={os.path.dirname(cache_dir.rstrip('/'))} "
      f"--overwrite\n(or set {IGNORE_FINGERPRINT_ENV}=1 if you know the change does not affect "
      "the cached data).")
  if os.environ.get(IGNORE_FINGERPRINT_ENV, "") not in ("", "0"):
    _LOGGER.warning("%s Ignored because %s is set.", message, IGNORE_FINGERPRINT_ENV)
    return
  raise CacheFingerprintError(message)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _array_record_dataset(path: tf.Tensor) -> tf.data.Dataset:
  """Raw records of one ArrayRecord file, read in chunks (Python only once per 1024 records)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  def chunks(p):
    reader = array_record_module.ArrayRecordReader(p.decode() if isinstance(p, bytes) else p)
    try:
      n = reader.num_records()
      for start in range(0, n, 1024):
        yield np.array(reader.read(list(range(start, min(n, start + 1024)))), dtype=object)
    finally:
      reader.close()

  return tf.data.Dataset.from_generator(
      chunks, args=(path,), output_signature=tf.TensorSpec([None], tf.string)).unbatch()


class FastCachedDataSource(seqio.FileDataSource):
  """Reads a split written by `cache_tasks`: raw records via seqio's `FileDataSource`, then a
  batched parse. Rank-0/1 features only; `reader_for` falls back to seqio's reader otherwise.

  A split as the cache job writes it (by hand here): tf.train.Example records in
  `<split>.tfrecord-*-of-<num_shards>`, their features in `info.<split>.json`, the number of
  examples in `stats.<split>.json`:

  >>> import json, shutil, tempfile
  >>> cache_dir = tempfile.mkdtemp()
  >>> with tf.io.TFRecordWriter(f"{cache_dir}/validation.tfrecord-00000-of-00001") as w:
  ...   for inputs, targets, text in [([9, 4], [3, 107], b"Paris"), ([5, 6, 7], [8], b"4")]:
  ...     w.write(seqio.dict_to_tfexample({"inputs": np.array(inputs, np.int32),
  ...                                      "targets": np.array(targets, np.int32),
  ...                                      "targets_pretokenized": text}).SerializeToString())
  >>> with open(f"{cache_dir}/info.validation.json", "w") as f:
  ...   json.dump({"num_shards": 1, "seqio_version": seqio.__version__, "features": {
  ...       "inputs": {"dtype": "int32", "shape": [None]},
  ...       "targets": {"dtype": "int32", "shape": [None]},
  ...       "targets_pretokenized": {"dtype": "string", "shape": []}}}, f)
  >>> with open(f"{cache_dir}/stats.validation.json", "w") as f:
  ...   json.dump({"examples": 2}, f)
  >>> with open(f"{cache_dir}/COMPLETED", "w") as f:       # written last
  ...   _ = f.write(cache_metadata.completed_contents("tfrecord", {}))
  >>> src = FastCachedDataSource(cache_dir, "validation")
  >>> for ex in src.get_dataset("validation", shuffle=False).as_numpy_iterator():
  ...   print({k: ex[k] for k in sorted(ex)})
  {'inputs': array([9, 4], dtype=int32), 'targets': array([  3, 107], dtype=int32),
   'targets_pretokenized': b'Paris'}
  {'inputs': array([5, 6, 7], dtype=int32), 'targets': array([8], dtype=int32),
   'targets_pretokenized': b'4'}
  >>> shutil.rmtree(cache_dir)
  """

  def __init__(self, cache_dir: str, split: str, file_shuffle_buffer_size: Optional[int] = None,
               cycle_length: int = 16, block_length: int = 16,
               output_format: Optional[str] = None):
    info = cache_integrity.read_json(seqio_utils.get_cached_info_path(cache_dir, split),
                                     cache_dir)
    stats = cache_integrity.read_json(seqio_utils.get_cached_stats_path(cache_dir, split),
                                      cache_dir)
    self.output_format = output_format or cache_metadata.output_format_of(cache_dir, split)
    self._features = {k: dict(v) for k, v in info["features"].items()}
    if version_lib.Version(info.get("seqio_version", "0.pre")) < version_lib.Version("0.0.0"):
      # Same rule as seqio's reader: very old caches stored int32 features as int64.
      for feat in self._features.values():
        if feat["dtype"] == "int64":
          feat["dtype"] = "int32"
    if self.output_format == "arrayrecord":
      prefix = os.path.join(cache_dir, split + cache_metadata.ARRAY_RECORD_SUFFIX)
      reader = _array_record_dataset
    else:
      prefix = seqio_utils.get_cached_tfrecord_prefix(cache_dir, split)
      reader = tf.data.TFRecordDataset
    super().__init__(
        read_file_fn=reader,
        split_to_filepattern={split: f"{prefix}-*-of-*{info['num_shards']}"},
        num_input_examples={split: stats["examples"]},
        file_shuffle_buffer_size=file_shuffle_buffer_size,
        cycle_length=cycle_length,
        block_length=block_length,
    )

  @staticmethod
  def supports(cache_dir: str, split: str) -> bool:
    """True if every feature has rank <= 1 (the batched parse keeps them exact)."""
    features = cache_integrity.read_json(seqio_utils.get_cached_info_path(cache_dir, split),
                                   cache_dir)["features"]
    return all(len(v["shape"] or []) <= 1 for v in features.values())

  def _parse_spec(self):
    spec = {}
    for key, feat in self._features.items():
      # int32 and bool are stored as int64 in tf.train.Example.
      dtype = "int64" if feat["dtype"] in ("int32", "bool") else feat["dtype"]
      # RaggedFeature keeps each example's own length through parse_example + unbatch;
      # FixedLenSequenceFeature would pad every example to the longest in its batch.
      spec[key] = tf.io.RaggedFeature(dtype) if feat["shape"] else tf.io.FixedLenFeature([], dtype)
    return spec

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    records = super().get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)
    spec, features = self._parse_spec(), self._features

    def parse(batch):
      parsed = tf.io.parse_example(batch, spec)
      out = {}
      for k, v in parsed.items():
        if k.endswith("_plaintext"):  # legacy name, as seqio's reader renames it
          k = k[: -len("plaintext")] + "pretokenized"
        out[k] = tf.cast(v, features[k if k in features else k.replace("_pretokenized", "_plaintext")]["dtype"])
      return out

    batches = records.batch(PARSE_BATCH_SIZE).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    # The examples of the parsed batches, as seqio's reader gives them (plain tensors, the
    # specs restated in the pulling thread), remembered as those batches: a batched post-cache
    # step (the LM tasks' chunking) works on them without regrouping.
    return batched.register_batches(batches)


def reader_for(cache_dir: str, split: str, file_shuffle_buffer_size: Optional[int] = None):
  """`FastCachedDataSource` when it applies, else seqio's own `_CachedDataSource`."""
  fmt = cache_metadata.output_format_of(cache_dir, split)
  if fmt == "arrayrecord" or FastCachedDataSource.supports(cache_dir, split):
    return FastCachedDataSource(cache_dir, split, file_shuffle_buffer_size, output_format=fmt)
  return seqio.dataset_providers._CachedDataSource(  # pylint: disable=protected-access
      cache_dir=cache_dir, split=split, file_shuffle_buffer_size=file_shuffle_buffer_size)


# ---------------------------------------------------------------------------------------------
# The checked path: a Task subclass, and functions for any task
# ---------------------------------------------------------------------------------------------

def _memo_key(task: seqio.Task) -> seqio.Task:
  # `checked_dataset` reads through a short-lived copy of the caller's task; its mark belongs to
  # the caller's task object.
  return task.__dict__.get("_checked_copy_of", task)


def require_cache(task: seqio.Task) -> str:
  """`task`'s completed cache directory, or `CacheNotFoundError` naming the directories searched
  and the command that builds the cache."""
  cache_dir = task.cache_dir
  if not cache_dir:
    raise CacheNotFoundError(missing_cache_message(task))
  return cache_dir


def check_cache(task: seqio.Task, split: str) -> str:
  """Runs every check on `task`'s cache of `split` and returns the cache directory.

  `CacheNotFoundError` if there is no completed cache, `CacheCorruptError` if a file of the split
  is not what the cache recorded (checked every time: files can go between two loads),
  `CacheFingerprintError` if the cache was written for another version of `task` (checked once
  per task object and cache directory).

  A task registered for the example (`gemma_tasks.builders.add_qa_task`, as the quiz task) and a
  cache dir as `cache_tasks` leaves it, with a data file written by hand (the checks look at the
  files and `COMPLETED`, not at the records):

  >>> import json, shutil, tempfile
  >>> from gemma_tasks import builders, sources
  >>> root = tempfile.mkdtemp()
  >>> task = builders.add_qa_task("doc_quiz", sources.JsonlDataSource(
  ...     {"validation": f"{root}/quiz.jsonl"}, fields={"question": str, "answers": list}))
  >>> cache_dir = os.path.join(root, "doc_quiz"); os.mkdir(cache_dir)
  >>> shard = f"{cache_dir}/validation.tfrecord-00000-of-00001"
  >>> with tf.io.TFRecordWriter(shard) as w:
  ...   w.write(b"one record")
  >>> with open(f"{cache_dir}/info.validation.json", "w") as f:
  ...   json.dump({"num_shards": 1}, f)
  >>> with open(f"{cache_dir}/COMPLETED", "w") as f:
  ...   _ = f.write(cache_metadata.completed_contents(
  ...       "tfrecord", {"doc_quiz": cache_fingerprint.task_fingerprint(task)}))
  >>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())
  >>> seqio.utils.set_global_cache_dirs([root])
  >>> check_cache(task, "validation") == cache_dir
  True
  >>> os.remove(shard)
  >>> check_cache(task, "validation")
  Traceback (most recent call last):
  ...
  gemma_tasks.cache_integrity.CacheCorruptError: The cache of task 'doc_quiz' at .../doc_quiz is
  damaged:
    .../doc_quiz/validation.tfrecord-00000-of-00001 is missing (info.validation.json lists 1 shards)
  Reading it would silently give fewer examples (or fail later without naming the file). Rebuild it:
    python -m cache_scripts.cache_tasks --tasks=doc_quiz --output_cache_dir=... --overwrite
  >>> seqio.TaskRegistry.remove("doc_quiz"); seqio.utils.set_global_cache_dirs(old_cache_dirs)
  >>> shutil.rmtree(root)
  """
  cache_dir = require_cache(task)
  cache_integrity.check_split(cache_dir, split, cache_metadata.output_format_of(cache_dir, split),
                              cache_metadata.read_metadata(cache_dir), task_name=task.name)
  key = _memo_key(task)
  if cache_dir not in _checked.get(key, ()):
    check_fingerprint(task, cache_dir)
    _checked.setdefault(key, set()).add(cache_dir)
  return cache_dir


def cached_source(task: seqio.Task, split: str,
                  file_shuffle_buffer_size: Optional[int] = None) -> seqio.DataSource:
  """`check_cache`, then the data source that reads the split (`reader_for`)."""
  cache_dir = check_cache(task, split)
  placeholder = next(p for p in task.preprocessors if isinstance(p, seqio.CacheDatasetPlaceholder))
  file_shuffle_buffer_size = file_shuffle_buffer_size or placeholder.file_shuffle_buffer_size
  return reader_for(cache_dir, split, file_shuffle_buffer_size)


def trim_features(example: Mapping[str, tf.Tensor], sequence_length, output_features
                  ) -> Dict[str, tf.Tensor]:
  """One example with each output feature cut to its length: the rule of seqio's trim step.

  A feature is cut only if it is an output feature and `sequence_length` gives it a length (an
  int, or one per dimension); everything else passes unchanged.

  >>> features = {"inputs": seqio.Feature(None), "targets": seqio.Feature(None)}
  >>> ex = {"inputs": tf.constant([5, 6, 7]), "targets": tf.constant([8, 9]),
  ...       "inputs_pretokenized": tf.constant("a b c")}
  >>> out = trim_features(ex, {"inputs": 2, "targets": None}, features)
  >>> {k: v.numpy().tolist() for k, v in out.items() if k != "inputs_pretokenized"}
  {'inputs': [5, 6], 'targets': [8, 9]}
  """
  out = {}
  for key, value in example.items():
    length = sequence_length.get(key) if sequence_length else None
    if key not in output_features or length is None:
      out[key] = value
      continue
    lengths = [length] if isinstance(length, int) else list(length)
    out[key] = value[tuple(slice(0, n) for n in lengths)]
  return out


class CheckedCacheTask(seqio.Task):
  """A `seqio.Task` whose `use_cached=True` path is checked and read by `FastCachedDataSource`.

  Through seqio's own extension point: register with
  `seqio.TaskRegistry.add(name, ..., task_cls=CheckedCacheTask)` (`gemma_tasks.builders` does).
  Nothing else changes: everything but the three methods below is `seqio.Task`'s.
  """

  def get_dataset(self, *args, **kwargs) -> tf.data.Dataset:
    """`seqio.Task.get_dataset`, with its per-example maps (the reader's, the trim) fused."""
    # Set at the end: an options node between two maps would keep them apart.
    return pipeline_options.with_fused_maps(super().get_dataset(*args, **kwargs))

  def assert_cached(self) -> None:
    require_cache(self)

  def _trim_output_features(self, dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
    """seqio's trim (every output feature cut to its length), run in the pulling thread."""
    return pipeline_options.inline_map(
        dataset, functools.partial(trim_features, sequence_length=sequence_length,
                                   output_features=self.output_features))

  def _get_cached_source(self, split: str, file_shuffle_buffer_size: Optional[int] = None):
    return cached_source(self, split, file_shuffle_buffer_size)


class _CheckedMixture(GemmaMixture):
  """A mixture whose tasks are each read through `_with_checks`."""

  def get_task_dataset(self, task, *args, **kwargs):
    return super().get_task_dataset(_with_checks(task), *args, **kwargs)


_COPY_CLASSES: Dict[type, type] = {}


def _checked_copy(obj, mixin: type):
  """A shallow copy of `obj` whose class puts `mixin` first; `obj` itself is not changed."""
  cls = type(obj)
  with _lock:
    if cls not in _COPY_CLASSES:
      _COPY_CLASSES[cls] = type(f"Checked{cls.__name__}", (mixin, cls), {})
    copy_cls = _COPY_CLASSES[cls]
  copy = copy_cls.__new__(copy_cls)
  # Dicts copied too: seqio memoizes into some (a task's `_stats`), and those stay the caller's.
  copy.__dict__.update({k: dict(v) if type(v) is dict else v  # pylint: disable=unidiomatic-typecheck
                        for k, v in vars(obj).items()})
  copy.__dict__["_checked_copy_of"] = obj.__dict__.get("_checked_copy_of", obj)
  return copy


def _with_checks(provider):
  if isinstance(provider, (CheckedCacheTask, _CheckedMixture)):
    return provider
  if isinstance(provider, seqio.Task):
    return _checked_copy(provider, CheckedCacheTask)
  if isinstance(provider, seqio.Mixture):
    return _checked_copy(provider, _CheckedMixture)
  raise TypeError(f"Expected a seqio.Task or seqio.Mixture, got {type(provider).__name__}")


def checked_dataset(task_or_mixture, sequence_length: Optional[Mapping[str, int]] = None,
                    split: str = "train", **get_dataset_kwargs) -> tf.data.Dataset:
  """`get_dataset(..., use_cached=True)` of any Task or Mixture (object or registered name),
  through the checks and the reader of `CheckedCacheTask`.

  For tasks registered without `task_cls=CheckedCacheTask` (your own, plain seqio ones): the
  task object, its registration and seqio stay as they are; the read goes through a copy of the
  task that has the checked methods. The other arguments are those of `seqio.Task.get_dataset`
  (`shuffle`, `seed`, `shard_info`, `num_epochs`, ...). A feature converter applies to the result
  as usual: `converter(ds, task_feature_lengths)`.

  A plain seqio task whose cache was written before its first preprocessor changed (the cache
  dir as `cache_tasks` leaves it, written by hand here; the check comes before any record is read):

  >>> import functools, json, shutil, tempfile
  >>> from gemma_tasks import builders
  >>> def add_suffix(dataset, suffix):
  ...   return dataset.map(lambda ex: {**ex, "targets": ex["targets"] + suffix})
  >>> def add_my_task(suffix):
  ...   seqio.TaskRegistry.remove("my_task")
  ...   return seqio.TaskRegistry.add("my_task", source=seqio.FunctionDataSource(
  ...       lambda split, shuffle_files: tf.data.Dataset.from_tensors(
  ...           {"inputs": "Capital of France?", "targets": "Paris"}), splits=["validation"]),
  ...       preprocessors=[functools.partial(add_suffix, suffix=suffix),
  ...                      seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder()],
  ...       output_features=builders.output_features())
  >>> root = tempfile.mkdtemp(); cache_dir = os.path.join(root, "my_task"); os.mkdir(cache_dir)
  >>> with tf.io.TFRecordWriter(f"{cache_dir}/validation.tfrecord-00000-of-00001") as w:
  ...   w.write(b"one record")
  >>> with open(f"{cache_dir}/info.validation.json", "w") as f:
  ...   json.dump({"num_shards": 1}, f)
  >>> with open(f"{cache_dir}/COMPLETED", "w") as f:
  ...   _ = f.write(cache_metadata.completed_contents(
  ...       "tfrecord", {"my_task": cache_fingerprint.task_fingerprint(add_my_task("."))}))
  >>> task = add_my_task("!")                      # the task as it is now
  >>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())
  >>> seqio.utils.set_global_cache_dirs([root])
  >>> ds = checked_dataset("my_task", {"inputs": 256, "targets": 64}, "validation", shuffle=False)
  Traceback (most recent call last):
  ...
  gemma_tasks.cached.CacheFingerprintError: The cache of task 'my_task' at .../my_task was written
  from a different task definition; changed: preprocessor[0]:...add_suffix. ...
  >>> type(task) is seqio.Task                     # the task itself is not changed
  True
  >>> seqio.TaskRegistry.remove("my_task"); seqio.utils.set_global_cache_dirs(old_cache_dirs)
  >>> shutil.rmtree(root)
  """
  provider = (seqio.get_mixture_or_task(task_or_mixture) if isinstance(task_or_mixture, str)
              else task_or_mixture)
  return _with_checks(provider).get_dataset(sequence_length=sequence_length, split=split,
                                            use_cached=True, **get_dataset_kwargs)
