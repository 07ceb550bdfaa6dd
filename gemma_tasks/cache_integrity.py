"""Is a written cache still what was written? Cheap checks of its files against its own records.

seqio's reader reads whatever shard files match a pattern: a deleted or emptied shard gives fewer
examples without a word (945 of 960), and a cut `info.<split>.json` is a bare `JSONDecodeError`.
A cache records what it should hold, so both are detectable without reading the data:

  * `info.<split>.json` has `num_shards`: every `<split>.tfrecord-0000i-of-0000n` must exist;
  * `COMPLETED` (our metadata, see `gemma_tasks.cache_metadata`) has `shard_bytes`: the size of every
    data file as written, recorded by `cache_tasks` after the job; a shard emptied or cut short
    no longer has it (caches written before sizes were recorded get the first check only).

`split_problems` lists what is wrong (for `validate` and `cache_tasks`); `check_split` raises
`CacheCorruptError` naming the files and the command that rebuilds the cache (the reader calls it
every time a cached split is opened: one listing and one size query per shard).

A split of two shards, written by hand here (a real cache has the same files), and the sizes
that `cache_tasks` records in `COMPLETED`:

>>> import shutil, tempfile
>>> root = tempfile.mkdtemp()
>>> cache = os.path.join(root, "gemma_quiz_qa"); os.mkdir(cache)
>>> for i, records in enumerate([[b"first", b"second"], [b"third"]]):
...   with tf.io.TFRecordWriter(f"{cache}/train.tfrecord-0000{i}-of-00002") as w:
...     for r in records:
...       w.write(r)
>>> with open(f"{cache}/info.train.json", "w") as f:
...   _ = f.write('{"num_shards": 2}')
>>> meta = {SHARD_BYTES_KEY: shard_bytes(cache, ["train"], "tfrecord")}
>>> meta
{'shard_bytes': {'train': {'train.tfrecord-00000-of-00002': 43,
                           'train.tfrecord-00001-of-00002': 21}}}
>>> check_split(cache, "train", "tfrecord", meta)         # as written: nothing to say

A shard emptied, then one deleted:

>>> open(f"{cache}/train.tfrecord-00001-of-00002", "w").close()
>>> check_split(cache, "train", "tfrecord", meta)
Traceback (most recent call last):
...
gemma_tasks.cache_integrity.CacheCorruptError: The cache of task 'gemma_quiz_qa' at
.../gemma_quiz_qa is damaged:
  .../gemma_quiz_qa/train.tfrecord-00001-of-00002 has 0 bytes; 21 bytes were written
Reading it would silently give fewer examples (or fail later without naming the file). Rebuild it:
  python -m cache_scripts.cache_tasks --tasks=gemma_quiz_qa --output_cache_dir=... --overwrite
>>> os.remove(f"{cache}/train.tfrecord-00000-of-00002")
>>> for problem in split_problems(cache, "train", "tfrecord", meta):
...   print(problem.replace(root, "<root>"))
<root>/gemma_quiz_qa/train.tfrecord-00000-of-00002 is missing (info.train.json lists 2 shards)
<root>/gemma_quiz_qa/train.tfrecord-00001-of-00002 has 0 bytes; 21 bytes were written
>>> shutil.rmtree(root)
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf
from seqio import utils as seqio_utils

ARRAY_RECORD_SUFFIX = ".array_record"
SHARD_BYTES_KEY = "shard_bytes"


class CacheCorruptError(ValueError):
  """A cache's files are not what its info / stats / COMPLETED files say was written."""


def rebuild_command(cache_dir: str, task_name: Optional[str] = None) -> str:
  """The command that writes the cache at `cache_dir` again.

  >>> rebuild_command("/tmp/c/gemma_quiz_qa")
  'python -m cache_scripts.cache_tasks --tasks=gemma_quiz_qa --output_cache_dir=/tmp/c --overwrite'
  """
  cache_dir = cache_dir.rstrip("/")
  name = task_name or os.path.basename(cache_dir)
  return (f"python -m cache_scripts.cache_tasks --tasks={name} "
          f"--output_cache_dir={os.path.dirname(cache_dir)} --overwrite")


def load_json(path: str):
  """(data, None) or (None, what is wrong with the file)."""
  if not tf.io.gfile.exists(path):
    return None, f"{path} is missing"
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    return json.loads(text), None
  except json.JSONDecodeError as e:
    # e.msg can itself end in "at" ("Unterminated string starting at"): name the place once.
    return None, f"{path}: not valid JSON ({e.msg}: line {e.lineno} column {e.colno}; cut short?)"


def read_json(path: str, cache_dir: str, task_name: Optional[str] = None) -> Dict[str, Any]:
  """A cache's `info.*.json` / `stats.*.json`; a missing or cut file is a `CacheCorruptError`.

  >>> import tempfile
  >>> with tempfile.TemporaryDirectory() as root:
  ...   cache = os.path.join(root, "gemma_quiz_qa"); os.mkdir(cache)
  ...   with open(f"{cache}/info.train.json", "w") as f:
  ...     _ = f.write('{"num_shards": 2, "features": {')      # cut short
  ...   read_json(f"{cache}/info.train.json", cache)
  Traceback (most recent call last):
  ...
  gemma_tasks.cache_integrity.CacheCorruptError: .../gemma_quiz_qa/info.train.json: not valid
  JSON (Expecting property name enclosed in double quotes: line 1 column 32; cut short?). The
  cache at .../gemma_quiz_qa cannot be read; rebuild it:
    python -m cache_scripts.cache_tasks --tasks=gemma_quiz_qa --output_cache_dir=... --overwrite
  """
  data, problem = load_json(path)
  if problem:
    raise CacheCorruptError(f"{problem}. The cache at {cache_dir} cannot be read; rebuild it:\n"
                            f"  {rebuild_command(cache_dir, task_name)}")
  return data


def data_prefix(cache_dir: str, split: str, output_format: str) -> str:
  """`<cache_dir>/<split>.tfrecord` or `<cache_dir>/<split>.array_record`."""
  if output_format == "arrayrecord":
    return os.path.join(cache_dir, split + ARRAY_RECORD_SUFFIX)
  return seqio_utils.get_cached_tfrecord_prefix(cache_dir, split)


def shard_names(cache_dir: str, split: str, output_format: str, num_shards: int) -> List[str]:
  """The data files the writer names `-SSSSS-of-NNNNN` (Beam's template, also `parallel`'s)."""
  prefix = data_prefix(cache_dir, split, output_format)
  return [f"{prefix}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def shard_bytes(cache_dir: str, splits, output_format: str) -> Dict[str, Dict[str, int]]:
  """{split: {data file name: size}} of the files present, for `COMPLETED`."""
  out = {}
  for split in splits:
    info = read_json(seqio_utils.get_cached_info_path(cache_dir, split), cache_dir)
    out[split] = {os.path.basename(p): tf.io.gfile.stat(p).length
                  for p in shard_names(cache_dir, split, output_format, info["num_shards"])
                  if tf.io.gfile.exists(p)}
  return out


def split_problems(cache_dir: str, split: str, output_format: str,
                   meta: Optional[Mapping[str, Any]] = None) -> List[str]:
  """What is wrong with the files of `split` (empty: nothing found), each naming a file."""
  info_path = seqio_utils.get_cached_info_path(cache_dir, split)
  info, problem = load_json(info_path)
  if problem:
    return [problem]
  num_shards = info.get("num_shards")
  if not isinstance(num_shards, int) or num_shards < 1:
    return [f"{info_path} has no valid num_shards ({num_shards!r})"]
  recorded = ((meta or {}).get(SHARD_BYTES_KEY) or {}).get(split) or {}
  names = shard_names(cache_dir, split, output_format, num_shards)
  present = set(tf.io.gfile.glob(data_prefix(cache_dir, split, output_format) + "-*"))
  problems = []
  for path in names:
    if path not in present:
      problems.append(f"{path} is missing ({os.path.basename(info_path)} lists {num_shards} "
                      "shards)")
      continue
    want = recorded.get(os.path.basename(path))
    if want is not None:
      size = tf.io.gfile.stat(path).length
      if size != want:
        problems.append(f"{path} has {size:,} bytes; {want:,} bytes were written")
  return problems


_SILENTLY_FEWER = ("Reading it would silently give fewer examples (or fail later without naming "
                   "the file).")


def damaged_message(cache_dir: str, problems: List[str], task_name: Optional[str] = None,
                    consequence: str = _SILENTLY_FEWER) -> str:
  name = task_name or os.path.basename(cache_dir.rstrip("/"))
  listed = "\n".join(f"  {p}" for p in problems)
  return (f"The cache of task {name!r} at {cache_dir} is damaged:\n{listed}\n{consequence} "
          f"Rebuild it:\n  {rebuild_command(cache_dir, task_name)}")


def check_split(cache_dir: str, split: str, output_format: str,
                meta: Optional[Mapping[str, Any]] = None, task_name: Optional[str] = None) -> None:
  """Raises `CacheCorruptError` if `split_problems` finds anything."""
  problems = split_problems(cache_dir, split, output_format, meta)
  if problems:
    raise CacheCorruptError(damaged_message(cache_dir, problems, task_name))


def count_tfrecords(path: str) -> int:
  """Records in one TFRecord file, each read and CRC-checked (`DataLossError` if one is bad).

  Counted in batches inside TF, so a 100 MB shard takes about a second, not a Python loop.
  """
  return int(tf.data.TFRecordDataset(path).batch(4096).reduce(
      tf.constant(0, tf.int64), lambda c, b: c + tf.cast(tf.shape(b)[0], tf.int64)).numpy())


def corrupt_records(files: List[str]) -> List[str]:
  """The TFRecord files among `files` with a record that does not read back, with TF's reason.

  A byte flipped inside a record keeps the file's size, so only reading finds it; TF's own
  error ("corrupted record at 5442") does not say which file, this does.

  >>> import tempfile
  >>> with tempfile.TemporaryDirectory() as d:
  ...   files = [f"{d}/train.tfrecord-0000{i}-of-00002" for i in range(2)]
  ...   for path in files:
  ...     with tf.io.TFRecordWriter(path) as w:
  ...       for r in [b"first", b"second"]:
  ...         w.write(r)
  ...   with open(files[1], "r+b") as f:      # one byte of the second record, same size
  ...     _ = f.seek(21 + 12); _ = f.write(b"S")
  ...   [p.replace(d, "<dir>") for p in corrupt_records(files)]
  ['<dir>/train.tfrecord-00001-of-00002: ...corrupted record at 33...']
  """
  problems = []
  for path in files:  # one at a time, so that each error names its file
    try:
      count_tfrecords(path)
    except tf.errors.DataLossError as e:
      problems.append(f"{path}: {e.message.strip()}")
  return problems
