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
  * The local runner is Beam's FnApiRunner in this process. seqio's default
    `--runner=DirectRunner` first tries to download the Prism runner binary; an explicit
    `--runner=DirectRunner` is rewritten to FnApiRunner for the same reason.
  * `--workers=N` starts N OS processes, each running that same in-process job on every N-th
    source shard, and merges their outputs into one seqio cache per task
    (`cache_scripts.parallel`). Beam's own multi-process mode (still used if
    `--pipeline_options` sets `--direct_num_workers`/`--direct_running_mode`) was slower with
    2 workers than with 1 on 2 CPUs: its runner process moves every element through gRPC.
  * A split whose source has fewer files than the job has workers (e.g. one JSONL file) is read
    as `--min_source_shards` line-interleaved shards, when the source supports arbitrary
    sharding, so N workers preprocess it in parallel. seqio's `PreprocessTask` is reused as is;
    only its list of shards is longer.
  * Each task's `COMPLETED` holds JSON metadata with the output format and the task's
    fingerprint (vocabulary, output features, source, preprocessors; see
    `cache_scripts.fingerprint`), checked when the cache is loaded (`cache_scripts.reader`).
  * Failure handling: a task directory without `COMPLETED` (an interrupted or failed run) is
    removed before the task is written again, and `beam-temp-*` leftovers are removed when a
    run fails. Already completed tasks are skipped (and listed as skipped) unless `--overwrite`,
    or unless their files are not what the cache recorded (`cache_scripts.integrity`: a shard
    deleted, emptied or cut, an info file cut short): such a cache in `--output_cache_dir` is
    removed and written again, and the report names what was wrong. After a run the size of
    every data file is added to `COMPLETED`, so that loading the cache can check it cheaply.
  * An `--output_cache_dir` that cannot be a directory (under a regular file) is a one-line error.
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
import json
import logging as py_logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
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

from cache_scripts import parallel
from cache_scripts import tfexample
from cache_scripts import validate as validate_lib
from gemma_tasks import cache_fingerprint as fingerprint_lib
from gemma_tasks import cache_integrity as integrity
from gemma_tasks import cache_metadata

FLAGS = flags.FLAGS
OUTPUT_FORMATS = ("tfrecord", "arrayrecord")
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "SwitchingDirectRunner")
PROGRESS_EVERY = 5000
DEFAULT_MODULES = ("gemma_tasks",)

flags.DEFINE_integer("workers", 1, "Local runner only: OS processes. Each runs seqio's pipeline "
                     "with the in-process FnApiRunner on every N-th source shard of the tasks; "
                     "their outputs are merged into one cache per task (see "
                     "cache_scripts.parallel). 1 runs in this process.")
flags.DEFINE_string("part_spec", None, "Internal: set by --workers>1 for its child processes "
                    "(JSON: which part of which tasks to write where).")
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
  repaired: Dict[str, List[str]] = dataclasses.field(default_factory=dict)  # dir -> problems
  validation: List[validate_lib.TaskReport] = dataclasses.field(default_factory=list)
  pipeline_options: List[str] = dataclasses.field(default_factory=list)
  processes: int = 1
  seconds: float = 0.0

  @property
  def ok(self) -> bool:
    return all(r.ok for r in self.validation)

  def summary(self) -> str:
    lines = [f"cache run: {len(self.written)} task(s) written to {self.output_cache_dir} "
             f"in {self.seconds:.1f}s with {self.processes} process(es) x "
             f"{' '.join(self.pipeline_options)}"]
    lines += [f"  cleaned incomplete cache: {d}" for d in self.cleaned]
    lines += [f"  rebuilt damaged cache: {d} ({'; '.join(p)})" for d, p in self.repaired.items()]
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

  def keep_part(self, k: int, parts: int, claims_dir: str) -> None:
    """Make this process part k of a `--workers` run.

    Every part lists every shard, its own (`i % parts == k`) first and then the others from
    the far end, and emits a shard only if it claims it first (`parallel.claim_shard`): a part
    that starts late (a child process imports TensorFlow for seconds) or gets the slow shards
    leaves the rest to the others instead of finishing last.

    `self.shards` stays the full list: seqio's `_emit_examples` reads shard i with
    `ShardInfo(i, len(self.shards))` and seeds its preprocessors from i, so each shard gives
    exactly the examples it gives in a one-process run, whichever part emits it.
    """
    self._part = ([s for s in self.shards if s[0] % parts == k]
                  + [s for s in reversed(self.shards) if s[0] % parts != k])
    self._claims = (claims_dir, f"{self._task_name}.{self._split}")

  def expand(self, pipeline):
    part = getattr(self, "_part", None)
    if part is None:
      return super().expand(pipeline)
    # seqio's two steps, over this part's claiming order; no reshuffle, so the order holds.
    return (pipeline
            | "create_shards" >> beam.Create(part, reshuffle=False)
            | "emit_examples" >> beam.FlatMap(self._emit_examples))

  def _emit_examples(self, shard):
    claims = getattr(self, "_claims", None)
    if claims and not parallel.claim_shard(claims[0], f"{claims[1]}.{shard[0]}"):
      return  # another part has it
    _quiet_seqio_example_logs()
    label = f"{self._task_name}/{self._split} shard {shard[0] + 1}/{len(self.shards)}"
    start, n = time.time(), 0
    for ex in super()._emit_examples(shard):
      # seqio yields eager tensors. Beam pickles every element between fused stages, and
      # unpickling an EagerTensor runs `tf.convert_to_tensor` (an eager op, ~100 us) per feature
      # per stage: 7.7 of 52 s of a one-process run. numpy values make the same records.
      ex = {k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in ex.items()}
      n += 1
      if n % PROGRESS_EVERY == 0:
        logging.info("%s: %d examples (%.0f/s)", label, n, n / max(time.time() - start, 1e-9))
      yield ex
    logging.info("%s: done, %d examples in %.1fs", label, n, time.time() - start)


@contextlib.contextmanager
def _our_pieces_in_seqio_graph(min_source_shards: int, part: Optional[int] = None,
                               plans: Optional[Dict[str, Dict[str, "parallel.SplitPlan"]]] = None,
                               claims_dir: Optional[str] = None):
  """While seqio's `run_pipeline` builds the graph, it uses our `PreprocessTask` and our
  `dict_to_tfexample` (`cache_scripts.tfexample`: same bytes, no eager TF op per feature).

  `run_pipeline` looks `beam_utils.PreprocessTask` up at call time, and seqio's
  `WriteExample*Record.expand` looks up `seqio.dict_to_tfexample`; swapping them for the duration
  of graph construction reuses seqio's whole pipeline (task selection, overwrite rules, shard
  counts, sinks, info/stats/COMPLETED writing) without copying it.

  With `part` (a child process of a `--workers` run), each split emits the source shards this
  part claims first in `claims_dir` (`plans[task][split]` gives the count), and writes that
  part's share of the split's output shards:
  `run_pipeline` reads `--min_shards`/`--max_shards` right after creating the `PreprocessTask`,
  so both are pinned to the share here (the caller restores them).
  """
  original_pat, original_to_example = beam_utils.PreprocessTask, seqio.dict_to_tfexample

  def make(task, split, **kwargs):
    pat = ShardedPreprocessTask(task, split, min_source_shards=min_source_shards, **kwargs)
    if part is not None:
      plan = plans[task.name][split]
      if len(pat.shards) != plan.source_shards:
        raise RuntimeError(f"{task.name}/{split}: {len(pat.shards)} source shards in this "
                           f"process, {plan.source_shards} planned")
      pat.keep_part(part, plan.parts, claims_dir)
      FLAGS.min_shards = FLAGS.max_shards = plan.output_counts()[part]
    return pat

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


def cache_problems(task: seqio.Task, cache_dir: str) -> List[str]:
  """What `integrity` finds wrong with the files of every split of `task` at `cache_dir`."""
  meta = cache_metadata.read_metadata(cache_dir)
  return [problem for split in task.splits
          for problem in integrity.split_problems(
              cache_dir, split, cache_metadata.output_format_of(cache_dir, split), meta)]


def make_output_dir(path: str) -> None:
  """Creates `path`; a path that cannot be a directory is a `ValueError` saying why.

  >>> make_output_dir("/tmp/notes.txt/cache")
  ValueError: --output_cache_dir /tmp/notes.txt/cache: /tmp/notes.txt is a file, not a directory
  """
  try:
    tf.io.gfile.makedirs(path)
  except tf.errors.OpError as e:
    parent = path.rstrip("/")
    while parent and not tf.io.gfile.exists(parent):
      parent = os.path.dirname(parent)
    if parent and not tf.io.gfile.isdir(parent):
      raise ValueError(f"--output_cache_dir {path}: {parent} is a file, not a directory") from None
    raise ValueError(f"--output_cache_dir {path}: cannot create it ({e.message})") from None


def _import_modules(modules: Sequence[str]) -> None:
  for m in modules:
    if m:
      importlib.import_module(m)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

def _run_in_process(tasks, options, module_import, flag_values, min_source_shards, overwrite,
                    ignore_other_caches, output_format, output_cache_dir) -> None:
  """seqio's pipeline for `tasks` [(name, out_dir, fingerprint)] in one Beam job."""
  pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(options))
  with _seqio_flag_values(**flag_values), _our_pieces_in_seqio_graph(min_source_shards):
    for name, _, fp in tasks:
      # One call per task, so each COMPLETED carries that task's own fingerprint.
      cache_tasks_main.run_pipeline(
          pipeline, [re.escape(name)], output_cache_dir,
          modules_to_import=list(module_import), overwrite=overwrite,
          ignore_other_caches=ignore_other_caches,
          completed_file_contents=cache_metadata.completed_contents(output_format, {name: fp}),
          output_format=output_format)
    logging.info("Caching %s with %s", [n for n, _, _ in tasks], " ".join(options))
    pipeline.run().wait_until_finish()


def _part_specs(tasks, plans, options, module_import, flag_values, min_source_shards,
                output_format, claims_dir) -> List[dict]:
  """What each part process does (JSON-able: it goes to the child on its command line)."""
  if not tasks:
    return []
  parts = max(next(iter(p.values())).parts for p in plans.values())
  return [{
      "part": k, "options": options, "module_import": list(module_import),
      "flag_values": flag_values, "min_source_shards": min_source_shards,
      "output_format": output_format, "claims_dir": claims_dir,
      "tasks": [{"name": name, "task_dir": out_dir,
                 "plans": {s: dataclasses.asdict(p) for s, p in plans[name].items()}}
                for name, out_dir, _ in tasks if k < next(iter(plans[name].values())).parts],
  } for k in range(parts)]


def _start_parts(specs: Sequence[dict]) -> List[tuple]:
  """Starts one child process per spec: `python -m cache_scripts.cache_tasks --part_spec=...`.

  A fresh interpreter rather than a fork: TensorFlow's threads do not survive `fork`, and the
  child imports `module_import` the way Dataflow workers do. Its log lines (progress) go to the
  same stderr as ours.
  """
  env = dict(os.environ)
  # The child must import what we imported (the repo, modules put on sys.path by the caller).
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(
      [package_root] + [p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  children = []
  for spec in specs:
    cmd = [sys.executable, "-m", "cache_scripts.cache_tasks", "--part_spec=" + json.dumps(spec),
           f"--verbosity={logging.get_verbosity()}"]
    children.append((subprocess.Popen(cmd, env=env), spec["part"]))
  if children:
    logging.info("Started part process(es) %s (pids %s)", [k for _, k in children],
                 [p.pid for p, _ in children])
  return children


def _run_part_in_this_process(spec: dict) -> None:
  """`run_part` here, keeping this process's seqio state (global cache dirs, cached lookups).

  The caller runs part 0 itself while the children run the others: TensorFlow and the tasks
  are already loaded here, so one process start-up (several seconds) is not on the clock.
  """
  saved_dirs = list(seqio.utils.get_global_cache_dirs())
  try:
    run_part(spec)
  finally:
    seqio.utils.set_global_cache_dirs(saved_dirs)
    for t in spec["tasks"]:
      seqio.TaskRegistry.get(t["name"])._cache_dir = None  # pylint: disable=protected-access


def _wait_for_parts(children) -> None:
  """Waits for every part; the first failure stops the others (no point finishing them)."""
  pending = list(children)
  while pending:
    for proc, k in list(pending):
      code = proc.poll()
      if code is None:
        continue
      pending.remove((proc, k))
      if code != 0:
        raise RuntimeError(f"part {k} (pid {proc.pid}) exited with status {code}; its log is "
                           "above")
    time.sleep(0.2)


def run_part(spec: dict) -> None:
  """Child process of a `--workers` run: writes part `spec["part"]` of each task (into
  `parallel.part_dir`) with seqio's pipeline and the in-process runner."""
  _import_modules(spec["module_import"])
  # Only the part directory counts: an existing cache elsewhere must not make seqio skip it.
  seqio.utils.set_global_cache_dirs([])
  k = spec["part"]
  plans = {t["name"]: {s: parallel.SplitPlan(**p) for s, p in t["plans"].items()}
           for t in spec["tasks"]}
  pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(spec["options"]))
  with _seqio_flag_values(**spec["flag_values"]), \
      _our_pieces_in_seqio_graph(spec["min_source_shards"], part=k, plans=plans,
                                 claims_dir=spec["claims_dir"]):
    for t in spec["tasks"]:
      parts = next(iter(plans[t["name"]].values())).parts
      seqio.TaskRegistry.get(t["name"])._cache_dir = None  # pylint: disable=protected-access
      cache_tasks_main.run_pipeline(
          pipeline, [re.escape(t["name"])], parallel.part_dir(t["task_dir"], k, parts),
          modules_to_import=list(spec["module_import"]), completed_file_contents="",
          output_format=spec["output_format"])
  logging.info("Part %d: caching %s", k, [t["name"] for t in spec["tasks"]])
  pipeline.run().wait_until_finish()


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
  seqio.add_global_cache_dirs([output_cache_dir] + list(tasks_additional_cache_dirs))
  if tfds_data_dir:
    seqio.set_tfds_data_dir_override(tfds_data_dir)
  options = assemble_pipeline_options(pipeline_options, workers)
  local = is_local(options)
  if min_source_shards is None:
    min_source_shards = 2 * int(_option_value(options, "direct_num_workers") or workers) if local else 0
  processes = 1
  if (local and workers > 1 and _option_value(pipeline_options, "direct_num_workers") is None
      and _option_value(pipeline_options, "direct_running_mode") is None):
    # N processes, each with the in-process runner (see cache_scripts.parallel for why). Explicit
    # --direct_* options keep Beam's own multi-process mode, as asked.
    processes, options = workers, assemble_pipeline_options(pipeline_options, 1)
  report = RunReport(output_cache_dir=output_cache_dir, pipeline_options=options,
                     processes=processes)
  make_output_dir(output_cache_dir)

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
    damage = cache_problems(task, cached_at) if cached_at and not overwrite else []
    if damage and cached_at == out_dir:
      # Not "already cached": its files are not what was written. Derived data: write it again.
      logging.warning("Rebuilding damaged cache of %s at %s: %s", name, out_dir, "; ".join(damage))
      tf.io.gfile.rmtree(out_dir)
      report.repaired[out_dir] = damage
      task._cache_dir = None  # pylint: disable=protected-access
      cached_at = None
    if cached_at and not overwrite and not ignore_other_caches:
      report.skipped[name] = (
          f"damaged cache at {cached_at} ({'; '.join(damage)}), outside --output_cache_dir; "
          "rebuild it there or pass --ignore_other_caches" if damage else
          f"already cached at {cached_at} (use --overwrite to rebuild)")
      logging.info("Skipping %s: %s", name, report.skipped[name])
      continue
    if cached_at and overwrite and cached_at != out_dir and not ignore_other_caches:
      report.skipped[name] = (f"cached at {cached_at}, outside --output_cache_dir; seqio does not "
                              "overwrite there (use --ignore_other_caches)")
      continue
    to_write.append((name, out_dir, fingerprint_lib.task_fingerprint(task)))

  if to_write:
    flag_values = dict(min_shards=min_shards, max_shards=max_shards, base_seed=base_seed,
                       tfds_data_dir=tfds_data_dir, enable_char_counts=enable_char_counts,
                       preserve_random_access=preserve_random_access)
    in_parts: Dict[str, Dict[str, parallel.SplitPlan]] = {}
    if processes > 1:
      for name, _, _ in to_write:
        task = seqio.TaskRegistry.get(name)
        shards = {split: len(ShardedPreprocessTask(task, split,
                                                   min_source_shards=min_source_shards).shards)
                  for split in task.splits}
        plans = parallel.plan_parts(shards, processes, min_shards, max_shards)
        if next(iter(plans.values())).parts > 1:
          in_parts[name] = plans
        else:
          logging.info("Caching %s in one process: its splits have %s source shards", name,
                       shards)
    here = [t for t in to_write if t[0] not in in_parts]
    # Local scratch for the parts' shard claims (the output dir may be a bucket).
    claims_dir = tempfile.mkdtemp(prefix="gemma-cache-claims-") if in_parts else None
    specs = _part_specs([t for t in to_write if t[0] in in_parts], in_parts, options,
                        module_import, flag_values, min_source_shards, output_format, claims_dir)
    # This process runs part 0 unless it has unsplittable tasks to run (then all parts are
    # children, so the two run side by side).
    children = _start_parts(specs if here else specs[1:])
    try:
      if here:
        _run_in_process(here, options, module_import, flag_values, min_source_shards,
                        overwrite, ignore_other_caches, output_format, output_cache_dir)
      elif specs:
        _run_part_in_this_process(specs[0])
      _wait_for_parts(children)
      for name, out_dir, fp in to_write:
        if name in in_parts:
          parallel.merge_parts(out_dir, in_parts[name], output_format)
          # Last, as in seqio's pipeline: a cache has COMPLETED only when everything is there.
          with tf.io.gfile.GFile(os.path.join(out_dir, "COMPLETED"), "w") as f:
            f.write(cache_metadata.completed_contents(output_format, {name: fp}))
    except BaseException as e:
      for proc, _ in children:
        if proc.poll() is None:
          proc.terminate()
          proc.wait()
      for _, d, _ in to_write:
        parallel.remove_parts(d)
      _remove_beam_temp([d for _, d, _ in to_write])
      raise CacheRunError(
          f"The cache job failed ({type(e).__name__}: {e}). No COMPLETED was written for "
          f"{[n for n, d, _ in to_write if not tf.io.gfile.exists(os.path.join(d, 'COMPLETED'))]}"
          "; run the same command again: it removes the partial output and starts those tasks "
          "over.") from e
    finally:
      if claims_dir:
        shutil.rmtree(claims_dir, ignore_errors=True)
    report.written += [name for name, _, _ in to_write]
    _remove_beam_temp([d for _, d, _ in to_write])
    for name, out_dir, _ in to_write:
      cache_metadata.record_shard_bytes(out_dir, seqio.TaskRegistry.get(name).splits)

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
  _quiet_seqio_example_logs()
  py_logging.getLogger("apache_beam").setLevel(py_logging.WARNING)
  if FLAGS.part_spec:
    # A child of a --workers run; its parent chose the verbosity and checks the output.
    run_part(json.loads(FLAGS.part_spec))
    return 0
  out = FLAGS.output_cache_dir
  if not out:
    # (absl's mark_flags_as_required only works before app.run has parsed the flags.)
    print("ERROR: --output_cache_dir is required (where the caches are written)",
          file=sys.stderr)
    return 1
  from gemma_seqio import cli_log  # pylint: disable=g-import-not-at-top
  # Library output (Beam, TF, SentencePiece, of this process and its workers) goes to
  # <output_cache_dir>/cache_tasks.log when that is a local directory.
  with cli_log.to_log_file(None if "://" in str(out) else out, "cache_tasks") as log:
    log.exit_code = _main()
  return log.exit_code


def _main() -> int:
  logging.set_verbosity(logging.INFO)
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
