"""Checks a cache written by `cache_tasks` before anyone trains on it.

For one task directory:
  * `COMPLETED` is present (and, for our caches, holds the metadata with the fingerprint);
  * per split: `info.<split>.json` and `stats.<split>.json` exist and parse, every data file the
    info file lists exists with the size `COMPLETED` recorded (`gemma_tasks.cache_integrity`), the
    number of data files is the `num_shards` of the info file, and the number of records in them
    is the `examples` of the stats file (a corrupt record is reported with its file); the token
    counts come from the stats file;
  * spot check: the first N examples computed on the fly (source -> preprocessors up to the cache
    placeholder) are all found, feature by feature, in the cached split. The cache is shuffled,
    so this scans the cached split until every one is found.

A QA task of two questions registered for the example (`gemma_tasks.builders.add_qa_task`, as
the quiz task) and cached in a temporary directory without the run's own validation:

>>> import json, shutil, tempfile
>>> from cache_scripts import cache_tasks
>>> from gemma_tasks import builders, sources
>>> tmp = tempfile.mkdtemp()
>>> with open(f"{tmp}/quiz.jsonl", "w") as f:
...   for q, a in [("Capital of France?", ["Paris"]), ("2 + 2 =", ["4", "four"])]:
...     print(json.dumps({"question": q, "answers": a}), file=f)
>>> task = builders.add_qa_task("doc_quiz", sources.JsonlDataSource(
...     {"validation": f"{tmp}/quiz.jsonl"}, fields={"question": str, "answers": list}))
>>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())
>>> _ = cache_tasks.cache_tasks(["doc_quiz"], tmp, min_shards=1, min_source_shards=1,
...                             validate=False)      # one shard file
>>> report = validate_cache(task, f"{tmp}/doc_quiz")
>>> report.ok, report.splits["validation"].examples, report.splits["validation"].spot_checked
(True, 2, 2)
>>> print(report.summary())
doc_quiz  validation: 2 examples in 1 tfrecord files, inputs 31 tokens, targets 5 tokens,
2/2 spot-checked

The shard emptied after the run:

>>> open(f"{tmp}/doc_quiz/validation.tfrecord-00000-of-00001", "w").close()
>>> report = validate_cache(task, f"{tmp}/doc_quiz")
>>> print(report.summary().replace(tmp, "<tmp>"))
doc_quiz  validation: 2 examples in 1 tfrecord files, inputs 31 tokens, targets 5 tokens,
0/2 spot-checked
doc_quiz  ERROR: validation: <tmp>/doc_quiz/validation.tfrecord-00000-of-00001 has 0 bytes;
554 bytes were written
doc_quiz  ERROR: validation: 0 records in the files, stats say 2
doc_quiz  ERROR: validation: only 0 of the first 2 on-the-fly examples are in the cache
(preprocessors before the cache placeholder not deterministic, or the cache is stale)
>>> seqio.TaskRegistry.remove("doc_quiz"); seqio.utils.set_global_cache_dirs(old_cache_dirs)
>>> shutil.rmtree(tmp)
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from typing import Dict, List, Optional

import numpy as np
import seqio
import tensorflow as tf
from seqio import utils as seqio_utils

from gemma_tasks import cache_integrity as integrity
from gemma_tasks import cache_metadata
from gemma_tasks.cached import reader_for


@dataclasses.dataclass
class SplitReport:
  examples: int = 0
  records: int = 0
  tokens: Dict[str, int] = dataclasses.field(default_factory=dict)
  num_shards: int = 0
  spot_checked: int = 0
  spot_check_total: int = 0


@dataclasses.dataclass
class TaskReport:
  task: str
  cache_dir: str
  output_format: str = "?"
  splits: Dict[str, SplitReport] = dataclasses.field(default_factory=dict)
  errors: List[str] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not self.errors

  def summary(self) -> str:
    lines = []
    for split, r in self.splits.items():
      toks = ", ".join(f"{k} {v:,} tokens" for k, v in sorted(r.tokens.items()))
      lines.append(f"{self.task}  {split}: {r.examples:,} examples in {r.num_shards} "
                   f"{self.output_format} files, {toks}, "
                   f"{r.spot_checked}/{r.spot_check_total} spot-checked")
    lines += [f"{self.task}  ERROR: {e}" for e in self.errors]
    return "\n".join(lines)


def _example_key(ex) -> str:
  """A hash of an example's features (name, dtype, shape, bytes), for multiset matching."""
  h = hashlib.sha256()
  for k in sorted(ex):
    if k.startswith("provenance/"):  # seqio.beam_utils.PROVENANCE_PREFIX (not imported: Beam)
      continue
    v = np.asarray(ex[k])
    if v.dtype == object:
      data = b"\x00".join(x if isinstance(x, bytes) else str(x).encode() for x in v.reshape(-1))
      dtype = "bytes"
    else:
      data, dtype = v.astype(v.dtype.newbyteorder("<")).tobytes(), v.dtype.name
    h.update(f"{k}|{dtype}|{v.shape}|".encode() + hashlib.sha256(data).digest())
  return h.hexdigest()


def count_records(files: List[str], output_format: str) -> int:
  """Records in the data files of one split; a corrupt file is a `CacheCorruptError` naming it."""
  if output_format == "arrayrecord":
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    total = 0
    for f in files:
      r = array_record_module.ArrayRecordReader(f)
      total += r.num_records()
      r.close()
    return total
  total = 0
  for f in files:  # one at a time, so that a DataLossError can name its file
    try:
      total += integrity.count_tfrecords(f)
    except tf.errors.DataLossError as e:
      raise integrity.CacheCorruptError(f"{f}: {e.message.strip()}") from None
  return total


def spot_check(task: seqio.Task, cache_dir: str, split: str, n: int) -> tuple:
  """(found, wanted): how many of the first `n` on-the-fly examples are in the cached split."""
  if n <= 0:
    return 0, 0
  on_the_fly = task.preprocess_precache(task.source.get_dataset(split, shuffle=False)).take(n)
  wanted = collections.Counter(_example_key(ex) for ex in on_the_fly.as_numpy_iterator())
  total = sum(wanted.values())
  missing = dict(wanted)
  cached = reader_for(cache_dir, split).get_dataset(split, shuffle=False)
  for ex in cached.as_numpy_iterator():
    key = _example_key(ex)
    if missing.get(key):
      missing[key] -= 1
      if not missing[key]:
        del missing[key]
        if not missing:
          break
  return total - sum(missing.values()), total


def validate_cache(task: seqio.Task, cache_dir: str, *, spot_check_examples: int = 64,
                   expected_format: Optional[str] = None) -> TaskReport:
  """Validates one task's cache directory; problems are collected in `report.errors`."""
  report = TaskReport(task=task.name, cache_dir=cache_dir)
  completed = os.path.join(cache_dir, "COMPLETED")
  if not tf.io.gfile.exists(completed):
    report.errors.append(f"no COMPLETED file in {cache_dir}")
    return report
  meta = cache_metadata.read_metadata(cache_dir)
  if meta is None:
    report.errors.append("COMPLETED holds no gemma-seqio metadata (no fingerprint)")
  else:
    report.output_format = meta.get("output_format", "?")
    if task.name not in meta.get("tasks", {}):
      report.errors.append(f"COMPLETED has no fingerprint for {task.name!r}")
  if expected_format and report.output_format not in ("?", expected_format):
    report.errors.append(f"written as {report.output_format}, expected {expected_format}")
  for split in task.splits:
    r = report.splits[split] = SplitReport()
    info_path = seqio_utils.get_cached_info_path(cache_dir, split)
    stats_path = seqio_utils.get_cached_stats_path(cache_dir, split)
    info, info_problem = integrity.load_json(info_path)
    stats, stats_problem = integrity.load_json(stats_path)
    if info_problem or stats_problem:
      report.errors += [f"{split}: {p}" for p in (info_problem, stats_problem) if p]
      continue
    r.examples = int(stats.get("examples", 0))
    r.tokens = {k[: -len("_tokens")]: int(v) for k, v in stats.items()
                if k.endswith("_tokens") and not k.endswith("_max_tokens")}
    fmt = report.output_format if report.output_format != "?" else \
        cache_metadata.output_format_of(cache_dir, split)
    report.errors += [f"{split}: {p}" for p in integrity.split_problems(cache_dir, split, fmt, meta)]
    files = cache_metadata.shard_files(cache_dir, split, fmt)
    r.num_shards = len(files)
    if len(files) != info.get("num_shards"):
      report.errors.append(f"{split}: {len(files)} data files, info says {info.get('num_shards')}")
    try:
      r.records = count_records(files, fmt)
    except integrity.CacheCorruptError as e:
      report.errors.append(f"{split}: {e}; rebuild the cache: "
                           f"{integrity.rebuild_command(cache_dir, task.name)}")
      continue
    if r.records != r.examples:
      report.errors.append(f"{split}: {r.records} records in the files, stats say {r.examples}")
    if r.examples and spot_check_examples:
      r.spot_checked, r.spot_check_total = spot_check(task, cache_dir, split, spot_check_examples)
      if r.spot_checked != r.spot_check_total:
        report.errors.append(
            f"{split}: only {r.spot_checked} of the first {r.spot_check_total} on-the-fly examples "
            "are in the cache (preprocessors before the cache placeholder not deterministic, or "
            "the cache is stale)")
  return report
