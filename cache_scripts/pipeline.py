"""The Beam graph that caches one seqio Task: seqio's public pieces, our serializer, explicit shards.

`CacheTask` is the graph seqio 0.0.20's `cache_tasks_main.run_pipeline` builds for a task, put
together from `seqio.beam_utils` (`PreprocessTask`, `GetInfo`, `GetStats`, `WriteJson`,
`WriteToArrayRecord`) with every setting an argument instead of an absl flag:

    per split:  ShardedPreprocessTask -+-> WriteTfExamples (serialize, Reshuffle, tfrecord | arrayrecord)
                                       +-> GetInfo(num_shards) -> WriteJson(info)
                                       +-> GetStats -> WriteJson(stats)
    per task:   all of the above -> Flatten -> (nothing) -> COMPLETED (header = our metadata)

so `COMPLETED` is written only after every split's files. Differences from seqio's graph, none
visible in the files:
  * `ShardedPreprocessTask` (a `beam_utils.PreprocessTask`) lists `min_source_shards`
    line-interleaved shards for a one-file source that allows it, reads each preprocessed shard
    a batch at a time and yields numpy values, and logs progress every `PROGRESS_EVERY`
    examples;
  * `WriteTfExamples` serializes with `cache_scripts.tfexample.dict_to_tfexample` (the bytes of
    `seqio.dict_to_tfexample`, without two eager TF ops per feature) before its shuffle, and
    that shuffle is the only one (seqio shuffles the examples twice).

>>> import apache_beam as beam, seqio
>>> from cache_scripts.options import assemble_pipeline_options
>>> p = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
...     assemble_pipeline_options([])))
>>> _ = p | CacheTask(seqio.get_mixture_or_task("gemma_quiz_qa"), "/tmp/cache/gemma_quiz_qa",
...                   min_shards=2, completed_contents="{}")
>>> p.run().wait_until_finish()
'DONE'
"""
from __future__ import annotations

import hashlib
import importlib
import logging as py_logging
import os
import time
from typing import Optional, Sequence

from absl import logging
import apache_beam as beam
import numpy as np
import seqio
from seqio import beam_utils
import tensorflow as tf

from cache_scripts import tfexample

PROGRESS_EVERY = 5000
EMIT_BATCH = 256  # examples per iterator step when reading a preprocessed shard
_ROW_LENGTHS = "__row_lengths_of_"
OUTPUT_FORMATS = ("tfrecord", "arrayrecord")


class _QuietExampleLogs(py_logging.Filter):
  """Drops seqio's `Example [2^k] = {...}` dumps (whole token arrays) from the progress output."""

  def filter(self, record):
    return not str(record.msg).startswith("Example [")


def quiet_seqio_example_logs():
  absl_logger = py_logging.getLogger("absl")
  if not any(isinstance(f, _QuietExampleLogs) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietExampleLogs())


class ShardedPreprocessTask(beam_utils.PreprocessTask):
  """seqio's `PreprocessTask`, with more shards than files when the source allows it, numpy
  values and progress lines.

  `_emit_examples` (seqio's) reads shard i as `source.get_dataset(split,
  shard_info=ShardInfo(i, len(self.shards)))`. For a source with `supports_arbitrary_sharding`
  (e.g. `gemma_tasks.sources.JsonlDataSource`: every n-th line) that works for any number of
  shards, so listing `min_source_shards` shards lets that many workers share one file.

  >>> pat = ShardedPreprocessTask(seqio.get_mixture_or_task("gemma_quiz_qa"), "train",
  ...                             min_source_shards=4)
  >>> [name for _, name in pat.shards]
  ['quiz_qa.train.jsonl.gz[0::4]', 'quiz_qa.train.jsonl.gz[1::4]', ...]
  """

  def __init__(self, task, split, *, min_source_shards: int = 0, **kwargs):
    super().__init__(task, split, **kwargs)
    if (min_source_shards and len(self.shards) < min_source_shards
        and task.source.supports_arbitrary_sharding):
      names = ",".join(os.path.basename(str(s)) for _, s in self.shards)
      self.shards = [(i, f"{names}[{i}::{min_source_shards}]") for i in range(min_source_shards)]

  def _emit_examples(self, shard):
    """seqio's `PreprocessTask._emit_examples` (same shard, seed, preprocessing, provenance and
    counters), reading the preprocessed shard a batch at a time as numpy.

    seqio iterates the `tf.data` pipeline one example at a time in eager mode (an iterator op
    and a tensor per feature per example: ~40% of a one-worker cache job) and yields eager
    tensors; here one iterator step brings `EMIT_BATCH` examples, split with numpy. Features
    of a shape numpy cannot split this way (ragged rank > 1) go through seqio's own method.
    """
    quiet_seqio_example_logs()
    shard_index, shard_name = shard
    label = f"{self._task_name}/{self._split} shard {shard_index + 1}/{len(self.shards)}"
    self._setup_fn()
    for module in self._modules_to_import or ():
      importlib.import_module(module)
    task = seqio.TaskRegistry.get(self._task_name)
    if self._tfds_data_dir:
      seqio.set_tfds_data_dir_override(self._tfds_data_dir)
    seed = shard_preprocessors_seed(self._task_name, shard_index, self._preprocessors_seed)
    ds = task.source.get_dataset(
        split=self._split, shard_info=seqio.ShardInfo(index=shard_index,
                                                      num_shards=len(self.shards)),
        shuffle=False, seed=seed)
    ds = task.preprocess_precache(ds, seed=seed)
    if not _splittable(ds.element_spec):
      yield from self._emit_one_by_one(shard, label)
      return
    self._increment_counter("input-shards")
    n = 0
    for n, ex in enumerate(_with_progress(_numpy_examples(ds), label), start=1):
      if self._add_provenance:
        ex.update({beam_utils.TASK_PROVENANCE_KEY: self._task_name,
                   beam_utils.SOURCE_SHARD_PROVENANCE_KEY: shard_name,
                   beam_utils.SOURCE_SHARD_ID_PROVENANCE_KEY: shard_index,
                   beam_utils.ID_WITHIN_SHARD_PROVENANCE_KEY: n - 1})
        if self._preprocessors_seed:
          ex[beam_utils.PREPROCESSORS_SEED_PROVENANCE_KEY] = self._preprocessors_seed
      yield ex
    beam.metrics.Metrics.counter(f"{self._task_name}_{self._split}", "examples").inc(n)

  def _emit_one_by_one(self, shard, label):
    # seqio yields eager tensors. Beam pickles every element between fused stages, and
    # unpickling an EagerTensor runs `tf.convert_to_tensor` (an eager op, ~100 us) per feature
    # per stage. numpy values make the same records.
    examples = ({k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in ex.items()}
                for ex in super()._emit_examples(shard))
    yield from _with_progress(examples, label)


def _with_progress(examples, label: str):
  """`examples`, logging the count every `PROGRESS_EVERY` and when the shard is done."""
  start, n = time.time(), 0
  for ex in examples:
    n += 1
    if n % PROGRESS_EVERY == 0:
      logging.info("%s: %d examples (%.0f/s)", label, n, n / max(time.time() - start, 1e-9))
    yield ex
  logging.info("%s: done, %d examples in %.1fs", label, n, time.time() - start)


def shard_preprocessors_seed(task_name: str, shard_index: int,
                             preprocessors_seed: Optional[int]) -> int:
  """The seed seqio's `PreprocessTask` gives the preprocessors of one source shard: the MD5 of
  task name and shard index (7 bytes of it if 8 overflow int64) plus the task's seed."""
  int64_max = 2**63 - 1
  digest = hashlib.md5(f"{task_name}shard{shard_index}".encode()).digest()
  seed = int.from_bytes(digest, "little") + (preprocessors_seed or 0)
  if seed > int64_max:
    seed = int.from_bytes(digest[:7], "little") + (preprocessors_seed or 0)
  return seed % int64_max


def _splittable(spec) -> bool:
  """Every feature is a tensor whose rows numpy can split: fixed shape, or one ragged axis."""
  if not isinstance(spec, dict):
    return False
  return all(isinstance(s, tf.TensorSpec) and (s.shape.rank == 0 or
                                                s.shape[1:].is_fully_defined())
             for s in spec.values())


def _numpy_examples(ds: tf.data.Dataset):
  """The examples of `ds` as dicts of numpy values (what `.numpy()` of each feature gives),
  read `EMIT_BATCH` at a time: variable-length features travel as (values, row lengths)."""
  spec = ds.element_spec
  varying = [k for k, s in spec.items() if s.shape.rank and not s.shape.is_fully_defined()]

  def flatten(batch):
    out = dict(batch)
    for k in varying:
      out[k] = batch[k].flat_values
      out[_ROW_LENGTHS + k] = batch[k].row_lengths()
    return out

  batches = ds.ragged_batch(EMIT_BATCH).map(flatten).prefetch(tf.data.AUTOTUNE)
  first = next(iter(spec))
  for batch in batches.as_numpy_iterator():
    size = len(batch[_ROW_LENGTHS + first] if first in varying else batch[first])
    columns = {}
    for k in spec:
      if k in varying:
        columns[k] = np.split(batch[k], np.cumsum(batch[_ROW_LENGTHS + k])[:-1])
      else:
        columns[k] = batch[k]
    for i in range(size):
      yield {k: columns[k][i] for k in spec}


class WriteTfExamples(beam.PTransform):
  """Examples (dicts) -> `tf.train.Example` shards: seqio's `WriteExampleTfRecord` /
  `WriteExampleArrayRecord` with our serializer (`cache_scripts.tfexample`)."""

  def __init__(self, output_prefix: str, num_shards: int, output_format: str = "tfrecord",
               preserve_random_access: bool = False):
    super().__init__()
    if output_format not in OUTPUT_FORMATS:
      raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    self._prefix, self._num_shards = output_prefix, num_shards
    self._format, self._preserve_random_access = output_format, preserve_random_access

  def expand(self, pcoll):
    # Records travel as bytes: the shuffle (seqio's global example shuffle, here the only one)
    # moves one bytes object per example instead of a pickled dict of arrays.
    coder = beam.coders.BytesCoder()
    if self._format == "arrayrecord":
      sink = beam_utils.WriteToArrayRecord(self._prefix, num_shards=self._num_shards, coder=coder,
                                           preserve_random_access=self._preserve_random_access)
    else:
      sink = beam.io.tfrecordio.WriteToTFRecord(self._prefix, num_shards=self._num_shards,
                                                coder=coder)
    return (pcoll
            | "to_tfexample" >> beam.Map(
                lambda ex: tfexample.dict_to_tfexample(ex).SerializeToString())
            | "shuffle" >> beam.Reshuffle()
            | "write" >> sink)


def output_shard_count(source_shards: int, min_shards: int, max_shards: int) -> int:
  """The output shard count of a split (seqio's rule: `--min_shards`, capped by `--max_shards`).

  >>> output_shard_count(4, 64, 0), output_shard_count(4, 0, 0), output_shard_count(4, 64, 8)
  (64, 4, 8)
  """
  n = max(source_shards, min_shards) if min_shards > 0 else source_shards
  return min(n, max_shards) if max_shards > 0 else n


def task_preprocessors_seed(task_name: str, base_seed: Optional[int]) -> Optional[int]:
  """seqio's per-task seed from `--base_seed` (None without one, or with -1).

  >>> task_preprocessors_seed("t", None), task_preprocessors_seed("t", -1)
  (None, None)
  """
  if not base_seed or base_seed == -1:
    return None
  return int.from_bytes(hashlib.md5(task_name.encode()).digest(), "little") + base_seed


def data_prefix(output_dir: str, split: str, output_format: str) -> str:
  """Where a split's shards go: seqio's names (`{split}.tfrecord-*`, `{split}.array_record-*`)."""
  if output_format == "arrayrecord":
    return os.path.join(output_dir, f"{split}.array_record")
  return seqio.get_cached_tfrecord_prefix(output_dir, split)


class CacheTask(beam.PTransform):
  """Caches every split of `task` into `output_dir`, `COMPLETED` last (see the module
  docstring). Apply it to a pipeline: `pipeline | CacheTask(...)`."""

  def __init__(self, task: seqio.Task, output_dir: str, *, completed_contents: str,
               min_shards: int = 64, max_shards: int = 0, min_source_shards: int = 0,
               output_format: str = "tfrecord", modules_to_import: Sequence[str] = (),
               base_seed: Optional[int] = None, tfds_data_dir: Optional[str] = None,
               enable_char_counts: bool = False, preserve_random_access: bool = False):
    super().__init__(label=task.name)
    self._task, self._output_dir = task, output_dir
    self._completed_contents = completed_contents
    self._min_shards, self._max_shards = min_shards, max_shards
    self._min_source_shards, self._output_format = min_source_shards, output_format
    self._modules_to_import, self._base_seed = list(modules_to_import), base_seed
    self._tfds_data_dir, self._enable_char_counts = tfds_data_dir, enable_char_counts
    self._preserve_random_access = preserve_random_access

  def expand(self, pbegin):
    task, out = self._task, self._output_dir
    seed = task_preprocessors_seed(task.name, self._base_seed)
    written = []
    for split in task.splits:
      pat = ShardedPreprocessTask(task, split, min_source_shards=self._min_source_shards,
                                  modules_to_import=self._modules_to_import,
                                  preprocessors_seed=seed, tfds_data_dir=self._tfds_data_dir)
      num_shards = output_shard_count(len(pat.shards), self._min_shards, self._max_shards)
      # seqio reshuffles the examples here ("globally shuffles examples as a side-effect") and
      # again before writing; the write's shuffle alone gives shuffled shards, and info and
      # stats do not depend on the order.
      examples = pbegin | f"{split}_pat" >> pat
      written.append(examples | f"{split}_write_examples" >> WriteTfExamples(
          data_prefix(out, split, self._output_format), num_shards, self._output_format,
          self._preserve_random_access))
      written.append(examples
                     | f"{split}_info" >> beam_utils.GetInfo(num_shards)
                     | f"{split}_write_info" >> beam_utils.WriteJson(
                         seqio.get_cached_info_path(out, split)))
      written.append(examples
                     | f"{split}_stats" >> beam_utils.GetStats(
                         task.output_features, enable_char_counts=self._enable_char_counts)
                     | f"{split}_write_stats" >> beam_utils.WriteJson(
                         seqio.get_cached_stats_path(out, split)))
    return (written
            | "flatten_completion_values" >> beam.Flatten()
            | "discard_completion_values" >> beam.Filter(lambda _: False)
            | "write_completed_file" >> beam.io.textio.WriteToText(
                os.path.join(out, "COMPLETED"), append_trailing_newlines=False, num_shards=1,
                shard_name_template="", header=self._completed_contents))
