r"""Caches seqio Tasks offline with Beam: the job, its settings and its CLI.

Locally (nothing is downloaded; Beam's FnApiRunner runs the job):

    python -m cache_scripts.cache_tasks \
        --tasks='gemma_quiz_qa,gemma_en_de_libreoffice' \
        --output_cache_dir=/data/seqio_cache

On Dataflow, see `cache_scripts.dataflow` (same flags plus the Cloud ones).

The flags are the fields of `CacheSettings` (`gemma_seqio.flags`), named as seqio's
`cache_tasks_main` names them: `--tasks` and `--excluded_tasks` (regexes, comma-separated or
several values), `--output_cache_dir`, `--module_import` (default here: `gemma_tasks`),
`--min_shards`, `--max_shards`, `--overwrite`, `--output_format=tfrecord|arrayrecord`,
`--pipeline_options` (comma-separated Beam options), `--tasks_additional_cache_dirs`,
`--ignore_other_caches`, `--base_seed`, `--tfds_data_dir`, `--enable_char_counts`,
`--preserve_random_access`. Added: `--workers`, `--min_source_shards`, `--spot_check_examples`,
`--validate`/`--no_validate`.

The job is composed in `cache_scripts.pipeline` from seqio's public Beam pieces; around it:
  * `cache_scripts.options`: local runs use Beam's FnApiRunner (seqio's default DirectRunner
    first tries to download the Prism runner); `--workers=N` is Beam's own
    `--direct_num_workers=N --direct_running_mode=multi_processing`.
  * `cache_scripts.metadata`: which tasks are written, skipped, cleaned (a task directory without
    `COMPLETED`) or rebuilt (files not what the cache recorded, `gemma_tasks.cache_integrity`); the
    run report. `beam-temp-*` leftovers are removed when a run fails.
  * Each task's `COMPLETED` holds JSON metadata with the output format and the task's fingerprint
    (`gemma_tasks.cache_fingerprint`), checked when the cache is loaded (`gemma_tasks.cached`);
    after the run the size of every data file is added to it.
  * After the run every written task is validated (`cache_scripts.validate`).
  * Progress: one log line per source shard every `pipeline.PROGRESS_EVERY` examples with its
    rate, and a summary at the end; library output goes to `<output_cache_dir>/cache_tasks.log`.

Python API (the same settings as keyword arguments, or a `CacheSettings`), here on a QA task of
two questions registered for the example (`gemma_tasks.builders.add_qa_task`, as the quiz task):

>>> import json, os, shutil, tempfile
>>> import seqio
>>> from cache_scripts import cache_tasks
>>> from gemma_tasks import builders, sources
>>> tmp = tempfile.mkdtemp()
>>> with open(f"{tmp}/quiz.jsonl", "w") as f:
...   for q, a in [("Capital of France?", ["Paris"]), ("2 + 2 =", ["4", "four"])]:
...     print(json.dumps({"question": q, "answers": a}), file=f)
>>> _ = builders.add_qa_task("doc_quiz", sources.JsonlDataSource(
...     {"validation": f"{tmp}/quiz.jsonl"}, fields={"question": str, "answers": list}))
>>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())   # the run adds its output dir
>>> report = cache_tasks.cache_tasks(["doc_quiz"], f"{tmp}/cache", min_shards=2)
>>> report.written, report.ok
(['doc_quiz'], True)
>>> print(report.validation[0].summary())
doc_quiz  validation: 2 examples in 2 tfrecord files, inputs 31 tokens, targets 5 tokens,
2/2 spot-checked
>>> sorted(os.listdir(f"{tmp}/cache/doc_quiz"))
['COMPLETED', 'info.validation.json', 'stats.validation.json',
 'validation.tfrecord-00000-of-00002', 'validation.tfrecord-00001-of-00002']
>>> cache_tasks.cache_tasks(["doc_quiz"], f"{tmp}/cache").skipped
{'doc_quiz': 'already cached at .../cache/doc_quiz (use --overwrite to rebuild)'}
>>> seqio.TaskRegistry.remove("doc_quiz"); seqio.utils.set_global_cache_dirs(old_cache_dirs)
>>> shutil.rmtree(tmp)
"""
from __future__ import annotations

import dataclasses
import importlib
import logging as py_logging
import sys
import time
from typing import Optional, Sequence, Tuple

from absl import logging
import apache_beam as beam
import seqio

from cache_scripts import metadata
from cache_scripts import options as options_lib
from cache_scripts import pipeline as pipeline_lib
from cache_scripts import validate as validate_lib
from gemma_tasks import cache_metadata
from gemma_seqio import cli_log
from gemma_seqio import flags as flags_lib
from gemma_seqio.flags import option

OUTPUT_FORMATS = pipeline_lib.OUTPUT_FORMATS
DEFAULT_MODULES = ("gemma_tasks",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CacheSettings:
  """One cache run; each field is the flag of the same name."""
  tasks: Tuple[str, ...] = option(
      (), separator=",", help="Regexes of the registered tasks to cache (all if none).")
  excluded_tasks: Tuple[str, ...] = option((), separator=",", help="Regexes of tasks to skip.")
  output_cache_dir: Optional[str] = option(None, help="Where the caches are written (required).")
  module_import: Tuple[str, ...] = option(
      DEFAULT_MODULES, separator=",",
      help="Modules to import (they register the tasks); Beam workers import them too.")
  pipeline_options: Tuple[str, ...] = option(
      (), separator=",", metavar="--BEAM_OPTION[,...]",
      help="Beam pipeline options, comma-separated, e.g. --pipeline_options=--runner=X,--y=z. "
           "Locally the runner is always Beam's FnApiRunner.")
  tasks_additional_cache_dirs: Tuple[str, ...] = option(
      (), separator=",", help="More directories searched for existing caches.")
  overwrite: bool = option(False, help="Write tasks again that are already cached.")
  ignore_other_caches: bool = option(
      False, help="Write into --output_cache_dir whatever other cache dirs hold.")
  min_shards: int = option(64, help="Minimum number of output shards per split.")
  max_shards: int = option(0, help="Maximum number of output shards per split (0: no limit).")
  base_seed: Optional[int] = option(None, help="Base seed of the preprocessors' seeds.")
  tfds_data_dir: Optional[str] = option(None, help="TFDS data dir for every task.")
  enable_char_counts: bool = option(False, help="Count characters in stats.json (slow).")
  output_format: str = option("tfrecord", choices=OUTPUT_FORMATS, help="Format of the shards.")
  preserve_random_access: bool = option(
      False, help="arrayrecord only: group_size=1 (random access; slower to write).")
  workers: int = option(
      1, help="Local runner only: Beam worker processes (--direct_num_workers=N "
              "--direct_running_mode=multi_processing); 1 runs in this process.")
  min_source_shards: Optional[int] = option(
      None, help="Read a split whose source has fewer files than this as this many "
                 "line-interleaved shards (if the source supports arbitrary sharding). "
                 "Default: 2 x workers locally, off on other runners.")
  spot_check_examples: int = option(
      64, help="After the run, check that the first N examples of each split computed on the "
               "fly are in the cache (0: skip).")
  validate: bool = option(True, help="Validate every written task after the run.")

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, (list, str)) and f.type.startswith("Tuple"):
        # A list (or one string) from Python callers: the tuple the flags give.
        object.__setattr__(self, f.name, (value,) if isinstance(value, str) else tuple(value))


class CacheRunError(RuntimeError):
  """The Beam job failed; no task of it has a COMPLETED file."""


def _import_modules(modules: Sequence[str]) -> None:
  for m in modules:
    if m:
      importlib.import_module(m)


def cache_tasks(tasks: Optional[Sequence[str]] = None, output_cache_dir: Optional[str] = None, *,
                settings: Optional[CacheSettings] = None, **fields) -> metadata.RunReport:
  """Runs the cache job and validates what it wrote; returns a `metadata.RunReport`.

  Either `settings`, or `CacheSettings` fields as arguments (`tasks`, `output_cache_dir`
  positional).
  """
  if settings is None:
    settings = CacheSettings(tasks=tasks or (), output_cache_dir=output_cache_dir, **fields)
  elif tasks is not None or output_cache_dir is not None or fields:
    raise TypeError("pass either settings or its fields, not both")
  return run(settings)


def run(s: CacheSettings) -> metadata.RunReport:
  """`cache_tasks` of a `CacheSettings` (see the module docstring)."""
  if s.output_format not in OUTPUT_FORMATS:
    raise ValueError(f"output_format must be one of {OUTPUT_FORMATS} (what seqio's Beam sinks "
                     f"write), got {s.output_format!r}")
  if not s.output_cache_dir:
    raise ValueError("--output_cache_dir is required (where the caches are written)")
  out = s.output_cache_dir
  start = time.time()
  _import_modules(s.module_import)
  seqio.add_global_cache_dirs([out] + list(s.tasks_additional_cache_dirs))
  if s.tfds_data_dir:
    seqio.set_tfds_data_dir_override(s.tfds_data_dir)
  options = options_lib.assemble_pipeline_options(s.pipeline_options, s.workers)
  local = options_lib.is_local(options)
  workers = int(options_lib.option_value(options, "direct_num_workers") or s.workers)
  min_source_shards = s.min_source_shards
  if min_source_shards is None:
    min_source_shards = 2 * workers if local else 0
  processes = workers if options_lib.running_mode(options) == "multi_processing" else 1
  report = metadata.RunReport(output_cache_dir=out, pipeline_options=options,
                              processes=processes)
  metadata.make_output_dir(out)

  names = metadata.select_tasks(s.tasks, s.excluded_tasks)
  if not names:
    raise ValueError(f"No registered task matches --tasks={list(s.tasks)} minus "
                     f"--excluded_tasks={list(s.excluded_tasks)} (modules imported: "
                     f"{list(s.module_import)})")
  to_write = metadata.plan_tasks(names, out, report, overwrite=s.overwrite,
                                 ignore_other_caches=s.ignore_other_caches)
  if to_write:
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(options))
    for t in to_write:
      _ = pipeline | pipeline_lib.CacheTask(
          seqio.TaskRegistry.get(t.name), t.output_dir,
          completed_contents=cache_metadata.completed_contents(
              s.output_format, {t.name: t.fingerprint}),
          min_shards=s.min_shards, max_shards=s.max_shards, min_source_shards=min_source_shards,
          output_format=s.output_format, modules_to_import=s.module_import,
          base_seed=s.base_seed, tfds_data_dir=s.tfds_data_dir,
          enable_char_counts=s.enable_char_counts,
          preserve_random_access=s.preserve_random_access)
    logging.info("Caching %s with %s", [t.name for t in to_write], " ".join(options))
    try:
      with options_lib.worker_import_path(options), options_lib.worker_logs_as_ours():
        pipeline.run().wait_until_finish()
    except BaseException as e:
      metadata.remove_beam_temp([t.output_dir for t in to_write])
      raise CacheRunError(
          f"The cache job failed ({type(e).__name__}: {e}). No COMPLETED was written for "
          f"{metadata.incomplete(to_write)}; run the same command again: it removes the "
          "partial output and starts those tasks over.") from e
    report.written += [t.name for t in to_write]
    metadata.remove_beam_temp([t.output_dir for t in to_write])
    for t in to_write:
      cache_metadata.record_shard_bytes(t.output_dir, seqio.TaskRegistry.get(t.name).splits)

  if s.validate:
    for t in to_write:
      report.validation.append(validate_lib.validate_cache(
          seqio.TaskRegistry.get(t.name), t.output_dir,
          spot_check_examples=s.spot_check_examples, expected_format=s.output_format))
  report.seconds = time.time() - start
  return report


def main(argv: Optional[Sequence[str]] = None, settings: Optional[CacheSettings] = None) -> int:
  """The CLI: parses `argv` (or takes `settings`), runs, prints the report; the exit code."""
  if settings is None:
    settings = flags_lib.parse(CacheSettings, argv, prog="python -m cache_scripts.cache_tasks",
                               description=__doc__.split("\n", 1)[0])
  out = settings.output_cache_dir
  if not out:
    print("ERROR: --output_cache_dir is required (where the caches are written)",
          file=sys.stderr)
    return 1
  # Library output (Beam, TF, SentencePiece, of this process and its workers) goes to
  # <output_cache_dir>/cache_tasks.log when that is a local directory.
  with cli_log.to_log_file(None if "://" in str(out) else out, "cache_tasks") as log:
    log.exit_code = _main(settings)
  return log.exit_code


def _main(settings: CacheSettings) -> int:
  logging.set_verbosity(logging.INFO)
  pipeline_lib.quiet_seqio_example_logs()
  py_logging.getLogger("apache_beam").setLevel(py_logging.WARNING)
  try:
    report = run(settings)
  except (CacheRunError, ValueError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 1
  print(report.summary())
  return 0 if report.ok else 1


def console_main():
  """Entry point of `gemma-cache-tasks`."""
  sys.exit(main())


if __name__ == "__main__":
  console_main()
