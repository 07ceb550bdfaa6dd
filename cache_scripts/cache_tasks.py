r"""Caches seqio Tasks offline with Beam: seqio's own `cache_tasks_main` pipeline, made to work.

Locally, with 2 worker processes (nothing is downloaded; Beam's FnApiRunner runs the job):

    python -m cache_scripts.cache_tasks \
        --tasks='gemma_quiz_qa,gemma_en_de_libreoffice' \
        --output_cache_dir=/data/seqio_cache --workers=2

On Dataflow, see `cache_scripts.dataflow` (same flags plus the Cloud ones).

All of seqio's flags keep their meaning (`--tasks` and `--excluded_tasks` are comma-separated
regexes, `--output_cache_dir`, `--module_import` (default here: `gemma_tasks`), `--min_shards`,
`--max_shards`, `--overwrite`, `--output_format=tfrecord|arrayrecord`, `--pipeline_options`,
`--tasks_additional_cache_dirs`, `--ignore_other_caches`, `--base_seed`, `--tfds_data_dir`,
`--enable_char_counts`, `--preserve_random_access`). Added: `--workers`, `--min_source_shards`,
`--spot_check_examples`, `--validate`.

What this adds to seqio 0.0.20's `main()`, and why:
  * `--output_format` is passed by keyword. seqio's `main()` passes it positionally into
    `completed_file_contents`, so `--output_format=arrayrecord` is silently ignored and
    `COMPLETED` contains the word `tfrecord`.
  * The local runner is Beam's FnApiRunner with `--workers` processes. seqio's default
    `--runner=DirectRunner` first tries to download the Prism runner binary; an explicit
    `--runner=DirectRunner` is rewritten to FnApiRunner for the same reason.
  * A split whose source has fewer files than the job has workers (e.g. one JSONL file) is read
    as `--min_source_shards` line-interleaved shards, when the source supports arbitrary
    sharding, so N workers preprocess it in parallel. seqio's `PreprocessTask` is reused as is;
    only its list of shards is longer.
  * Each task's `COMPLETED` holds JSON metadata with the output format and the task's
    fingerprint (vocabulary, output features, source, preprocessors; see
    `cache_scripts.fingerprint`), checked when the cache is loaded (`cache_scripts.reader`).
  * Failure handling: a task directory without `COMPLETED` (an interrupted or failed run) is
    removed before the task is written again, and `beam-temp-*` leftovers are removed when a
    run fails. Already completed tasks are skipped (and listed as skipped) unless `--overwrite`.
  * After the run every written task is validated (`cache_scripts.validate`): `COMPLETED`,
    examples and tokens per split, record counts, and a spot check against on-the-fly examples.
  * Examples become `tf.train.Example`s through `cache_scripts.tfexample` (same bytes as
    `seqio.dict_to_tfexample`, without two eager TF ops per feature, which took ~45% of the job).
  * Progress: one log line per source shard every `PROGRESS_EVERY` examples with its rate, and a
    summary per task at the end.

Python API (same behaviour, no flags involved):

>>> from cache_scripts import cache_tasks
>>> report = cache_tasks.cache_tasks(["gemma_quiz_qa"], "/tmp/cache", workers=1, min_shards=2)
>>> report.written, report.ok
(['gemma_quiz_qa'], True)
>>> cache_tasks.cache_tasks(["gemma_quiz_qa"], "/tmp/cache").skipped
{'gemma_quiz_qa': 'already cached at /tmp/cache/gemma_quiz_qa (use --overwrite to rebuild)'}
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging as py_logging
import os
import re
import sys
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

import apache_beam as beam
import seqio
from seqio import beam_utils
# Importing it defines seqio's flags (tasks, output_cache_dir, ...) that `run_pipeline` reads.
from seqio.scripts import cache_tasks_main
import tensorflow as tf

from cache_scripts import fingerprint as fingerprint_lib
from cache_scripts import reader
from cache_scripts import tfexample
from cache_scripts import validate as validate_lib

FLAGS = flags.FLAGS
OUTPUT_FORMATS = ("tfrecord", "arrayrecord")
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "SwitchingDirectRunner")
PROGRESS_EVERY = 5000
DEFAULT_MODULES = ("gemma_tasks",)

flags.DEFINE_integer("workers", 1, "Local runner only: worker processes (FnApiRunner "
                     "direct_num_workers). 1 runs in this process. On a 2-CPU machine 2 workers "
                     "were not faster than 1 (benchmarks/cache.py): the runner's own process "
                     "moves every element through gRPC and the shuffles.")
flags.DEFINE_integer("min_source_shards", None, "Read a split whose source has fewer files than "
                     "this as this many line-interleaved shards (if the source supports "
                     "arbitrary sharding). Default: 2 x --workers locally, off on other runners.")
flags.DEFINE_integer("spot_check_examples", 64, "After the run, check that the first N examples "
                     "of each split computed on the fly are in the cache (0: skip).")
flags.DEFINE_boolean("validate", True, "Validate every written task after the run.")
FLAGS.set_default("module_import", list(DEFAULT_MODULES))
FLAGS.set_default("pipeline_options", [])


class CacheRunError(RuntimeError):
  """The Beam job failed; no task of it has a COMPLETED file."""


@dataclasses.dataclass
class RunReport:
  output_cache_dir: str
  written: List[str] = dataclasses.field(default_factory=list)
  skipped: Dict[str, str] = dataclasses.field(default_factory=dict)
  cleaned: List[str] = dataclasses.field(default_factory=list)
  validation: List[validate_lib.TaskReport] = dataclasses.field(default_factory=list)
  pipeline_options: List[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def ok(self) -> bool:
    return all(r.ok for r in self.validation)

  def summary(self) -> str:
    lines = [f"cache run: {len(self.written)} task(s) written to {self.output_cache_dir} "
             f"in {self.seconds:.1f}s with {' '.join(self.pipeline_options)}"]
    lines += [f"  cleaned incomplete cache: {d}" for d in self.cleaned]
    lines += [f"  skipped {k}: {v}" for k, v in sorted(self.skipped.items())]
    lines += ["  " + line for r in self.validation for line in r.summary().splitlines()]
    lines.append("validation: " + ("OK" if self.ok else "FAILED") if self.validation
                 else "validation: not run")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def _option_value(options: Sequence[str], name: str) -> Optional[str]:
  """Last value of `--name=value` / `--name value` in an argv-style list.

  >>> _option_value(["--runner=DataflowRunner", "--project", "p"], "project")
  'p'
  """
  value = None
  for i, opt in enumerate(options):
    if opt.startswith(f"--{name}="):
      value = opt.split("=", 1)[1]
    elif opt == f"--{name}" and i + 1 < len(options):
      value = options[i + 1]
  return value


def _without(options: Sequence[str], name: str) -> List[str]:
  out, skip = [], False
  for i, opt in enumerate(options):
    if skip:
      skip = False
      continue
    if opt.startswith(f"--{name}="):
      continue
    if opt == f"--{name}":
      skip = i + 1 < len(options) and not options[i + 1].startswith("--")
      continue
    out.append(opt)
  return out


def is_local(options: Sequence[str]) -> bool:
  runner = _option_value(options, "runner")
  return runner is None or runner.split(".")[-1] in LOCAL_RUNNERS


def assemble_pipeline_options(pipeline_options: Sequence[str] = (), workers: int = 1) -> List[str]:
  """Beam options for the job: local ones filled in, remote ones passed through.

  >>> assemble_pipeline_options([], workers=2)[:3]
  ['--runner=FnApiRunner', '--direct_num_workers=2', '--direct_running_mode=multi_processing']
  >>> assemble_pipeline_options(["--runner=DirectRunner"], workers=1)
  ['--runner=FnApiRunner', '--direct_num_workers=1', '--direct_running_mode=in_memory']
  >>> assemble_pipeline_options(["--runner=DataflowRunner", "--project=p"], workers=8)
  ['--runner=DataflowRunner', '--project=p']
  """
  options = list(pipeline_options)
  if not is_local(options):
    return options
  if workers < 1:
    raise ValueError(f"--workers must be >= 1, got {workers}")
  runner = _option_value(options, "runner")
  if runner is not None and runner.split(".")[-1] != "FnApiRunner":
    logging.info("Running with FnApiRunner instead of %s: Beam's DirectRunner first tries to "
                 "download the Prism runner.", runner)
  options = _without(options, "runner")
  local = ["--runner=FnApiRunner"]
  if _option_value(options, "direct_num_workers") is None:
    local.append(f"--direct_num_workers={workers}")
  else:
    workers = int(_option_value(options, "direct_num_workers"))
  if _option_value(options, "direct_running_mode") is None:
    # in_memory runs in this process (no worker start-up cost, and tasks registered at run time
    # are visible); multi_processing gives real parallelism (the GIL limits threads).
    local.append("--direct_running_mode=" + ("multi_processing" if workers > 1 else "in_memory"))
  if workers > 1 and _option_value(options, "sdk_harness_log_level_overrides") is None:
    # Worker processes log Beam's harness chatter at INFO; keep the progress lines readable.
    local.append('--sdk_harness_log_level_overrides={"apache_beam":"WARNING","__main__":"WARNING"}')
  return local + options


# ---------------------------------------------------------------------------------------------
# Pipeline pieces
# ---------------------------------------------------------------------------------------------

class _QuietExampleLogs(py_logging.Filter):
  """Drops seqio's `Example [2^k] = {...}` dumps (whole token arrays) from the progress output."""

  def filter(self, record):
    return not str(record.msg).startswith("Example [")


def _quiet_seqio_example_logs():
  absl_logger = py_logging.getLogger("absl")
  if not any(isinstance(f, _QuietExampleLogs) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietExampleLogs())


class ShardedPreprocessTask(beam_utils.PreprocessTask):
  """seqio's `PreprocessTask`, with more shards than files when the source allows it, and
  progress lines.

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
    _quiet_seqio_example_logs()
    label = f"{self._task_name}/{self._split} shard {shard[0] + 1}/{len(self.shards)}"
    start, n = time.time(), 0
    for ex in super()._emit_examples(shard):
      n += 1
      if n % PROGRESS_EVERY == 0:
        logging.info("%s: %d examples (%.0f/s)", label, n, n / max(time.time() - start, 1e-9))
      yield ex
    logging.info("%s: done, %d examples in %.1fs", label, n, time.time() - start)


@contextlib.contextmanager
def _our_pieces_in_seqio_graph(min_source_shards: int):
  """While seqio's `run_pipeline` builds the graph, it uses our `PreprocessTask` and our
  `dict_to_tfexample` (`cache_scripts.tfexample`: same bytes, no eager TF op per feature).

  `run_pipeline` looks `beam_utils.PreprocessTask` up at call time, and seqio's
  `WriteExample*Record.expand` looks up `seqio.dict_to_tfexample`; swapping them for the duration
  of graph construction reuses seqio's whole pipeline (task selection, overwrite rules, shard
  counts, sinks, info/stats/COMPLETED writing) without copying it.
  """
  original_pat, original_to_example = beam_utils.PreprocessTask, seqio.dict_to_tfexample

  def make(task, split, **kwargs):
    return ShardedPreprocessTask(task, split, min_source_shards=min_source_shards, **kwargs)

  beam_utils.PreprocessTask = make
  seqio.dict_to_tfexample = tfexample.dict_to_tfexample
  try:
    yield
  finally:
    beam_utils.PreprocessTask = original_pat
    seqio.dict_to_tfexample = original_to_example


@contextlib.contextmanager
def _seqio_flag_values(**values):
  """Sets the absl flags seqio's `run_pipeline` reads, restoring them afterwards."""
  if not FLAGS.is_parsed():
    FLAGS.mark_as_parsed()
  saved = {k: FLAGS[k].value for k in values}
  try:
    for k, v in values.items():
      FLAGS[k].value = v
    yield
  finally:
    for k, v in saved.items():
      FLAGS[k].value = v


def select_tasks(patterns: Optional[Sequence[str]], excluded: Optional[Sequence[str]] = ()):
  """Registered task names matched the way seqio's `run_pipeline` matches them (full regex).

  >>> select_tasks(["gemma_quiz_.*"], [])
  ['gemma_quiz_qa']
  """
  included = re.compile(r"(%s\Z)" % r"\Z|".join(patterns or [".*"]))
  excluded_re = re.compile(r"(%s\Z)" % r"\Z|".join(excluded or []))
  return [t for t in seqio.TaskRegistry.names()
          if included.match(t) and not excluded_re.match(t)]


def _remove_beam_temp(task_dirs: Sequence[str]) -> None:
  for d in task_dirs:
    for tmp in tf.io.gfile.glob(os.path.join(d, "beam-temp-*")):
      tf.io.gfile.rmtree(tmp)


def _import_modules(modules: Sequence[str]) -> None:
  for m in modules:
    if m:
      importlib.import_module(m)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

def cache_tasks(
    tasks: Optional[Sequence[str]],
    output_cache_dir: str,
    *,
    excluded_tasks: Sequence[str] = (),
    module_import: Sequence[str] = DEFAULT_MODULES,
    workers: int = 1,
    pipeline_options: Sequence[str] = (),
    overwrite: bool = False,
    output_format: str = "tfrecord",
    min_shards: int = 64,
    max_shards: int = 0,
    min_source_shards: Optional[int] = None,
    tasks_additional_cache_dirs: Sequence[str] = (),
    ignore_other_caches: bool = False,
    base_seed: Optional[int] = None,
    tfds_data_dir: Optional[str] = None,
    enable_char_counts: bool = False,
    preserve_random_access: bool = False,
    validate: bool = True,
    spot_check_examples: int = 64,
) -> RunReport:
  """Runs the cache job and validates what it wrote (see the module docstring)."""
  if output_format not in OUTPUT_FORMATS:
    raise ValueError(f"output_format must be one of {OUTPUT_FORMATS} (what seqio's Beam sinks "
                     f"write), got {output_format!r}")
  start = time.time()
  _import_modules(module_import)
  reader.install()
  seqio.add_global_cache_dirs([output_cache_dir] + list(tasks_additional_cache_dirs))
  if tfds_data_dir:
    seqio.set_tfds_data_dir_override(tfds_data_dir)
  options = assemble_pipeline_options(pipeline_options, workers)
  local = is_local(options)
  if min_source_shards is None:
    min_source_shards = 2 * int(_option_value(options, "direct_num_workers") or workers) if local else 0
  report = RunReport(output_cache_dir=output_cache_dir, pipeline_options=options)
  tf.io.gfile.makedirs(output_cache_dir)

  names = select_tasks(tasks, excluded_tasks)
  if not names:
    raise ValueError(f"No registered task matches --tasks={list(tasks or [])} minus "
                     f"--excluded_tasks={list(excluded_tasks)} (modules imported: "
                     f"{list(module_import)})")
  to_write = []
  for name in names:
    task = seqio.TaskRegistry.get(name)
    out_dir = os.path.join(output_cache_dir, seqio.get_task_dir_from_name(name))
    if not task.supports_caching:
      report.skipped[name] = "no seqio.CacheDatasetPlaceholder in its preprocessors"
      continue
    if not task.splits:
      report.skipped[name] = "no splits"
      continue
    if tf.io.gfile.exists(out_dir) and not tf.io.gfile.exists(os.path.join(out_dir, "COMPLETED")):
      # Left by an interrupted or failed run: partial shards and beam-temp-* directories.
      logging.warning("Removing incomplete cache of %s (no COMPLETED): %s", name, out_dir)
      tf.io.gfile.rmtree(out_dir)
      report.cleaned.append(out_dir)
      task._cache_dir = None  # pylint: disable=protected-access
    cached_at = task.cache_dir
    if cached_at and not overwrite and not ignore_other_caches:
      report.skipped[name] = f"already cached at {cached_at} (use --overwrite to rebuild)"
      logging.info("Skipping %s: %s", name, report.skipped[name])
      continue
    if cached_at and overwrite and cached_at != out_dir and not ignore_other_caches:
      report.skipped[name] = (f"cached at {cached_at}, outside --output_cache_dir; seqio does not "
                              "overwrite there (use --ignore_other_caches)")
      continue
    to_write.append((name, out_dir, fingerprint_lib.task_fingerprint(task)))

  if to_write:
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(options))
    flag_values = dict(min_shards=min_shards, max_shards=max_shards, base_seed=base_seed,
                       tfds_data_dir=tfds_data_dir, enable_char_counts=enable_char_counts,
                       preserve_random_access=preserve_random_access)
    with _seqio_flag_values(**flag_values), _our_pieces_in_seqio_graph(min_source_shards):
      for name, out_dir, fp in to_write:
        # One call per task, so each COMPLETED carries that task's own fingerprint.
        written = cache_tasks_main.run_pipeline(
            pipeline, [re.escape(name)], output_cache_dir,
            modules_to_import=list(module_import), overwrite=overwrite,
            ignore_other_caches=ignore_other_caches,
            completed_file_contents=reader.completed_contents(output_format, {name: fp}),
            output_format=output_format)
        report.written += [name for _ in written]
      logging.info("Caching %s with %s", report.written, " ".join(options))
      try:
        result = pipeline.run()
        result.wait_until_finish()
      except BaseException as e:
        _remove_beam_temp([d for _, d, _ in to_write])
        raise CacheRunError(
            f"The cache job failed ({type(e).__name__}: {e}). No COMPLETED was written for "
            f"{[n for n, _, _ in to_write]}; run the same command again: it removes the partial "
            "output and starts those tasks over.") from e
    _remove_beam_temp([d for _, d, _ in to_write])

  if validate:
    for name, out_dir, _ in to_write:
      task = seqio.TaskRegistry.get(name)
      task._cache_dir = None  # pylint: disable=protected-access
      report.validation.append(validate_lib.validate_cache(
          task, out_dir, spot_check_examples=spot_check_examples, expected_format=output_format))
  report.seconds = time.time() - start
  return report


def main(argv):
  del argv
  flags.mark_flags_as_required(["output_cache_dir"])
  logging.set_verbosity(logging.INFO)
  _quiet_seqio_example_logs()
  py_logging.getLogger("apache_beam").setLevel(py_logging.WARNING)
  try:
    report = cache_tasks(
        FLAGS.tasks, FLAGS.output_cache_dir, excluded_tasks=FLAGS.excluded_tasks or (),
        module_import=FLAGS.module_import, workers=FLAGS.workers,
        pipeline_options=FLAGS.pipeline_options, overwrite=FLAGS.overwrite,
        output_format=FLAGS.output_format, min_shards=FLAGS.min_shards,
        max_shards=FLAGS.max_shards, min_source_shards=FLAGS.min_source_shards,
        tasks_additional_cache_dirs=FLAGS.tasks_additional_cache_dirs,
        ignore_other_caches=FLAGS.ignore_other_caches, base_seed=FLAGS.base_seed,
        tfds_data_dir=FLAGS.tfds_data_dir, enable_char_counts=FLAGS.enable_char_counts,
        preserve_random_access=FLAGS.preserve_random_access, validate=FLAGS.validate,
        spot_check_examples=FLAGS.spot_check_examples)
  except (CacheRunError, ValueError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 1
  print(report.summary())
  return 0 if report.ok else 1


def console_main():
  """Entry point of `gemma-cache-tasks`."""
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  console_main()
