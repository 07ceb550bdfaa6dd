"""What a cache run decides and records around the Beam job: which tasks to write, which to skip,
which leftovers to clean; the run report.

Deciding (`plan_tasks`), per selected task, before the job:
  * skipped: the task cannot be cached (no `seqio.CacheDatasetPlaceholder`, no splits), or a
    complete cache already exists in a cache dir (without `--overwrite`), or it exists outside
    `--output_cache_dir`, where nothing is overwritten (unless `--ignore_other_caches`);
  * cleaned: a task directory in `--output_cache_dir` without `COMPLETED` (an interrupted or
    failed run) is removed before the task is written again;
  * repaired: a complete cache in `--output_cache_dir` whose files are not what was recorded
    (`gemma_tasks.cache_integrity`: a shard deleted, emptied or cut, an info file cut short) is
    removed and written again, with what was wrong in the report.

Where a task is cached is looked up here (`find_cache`: the first of seqio's global cache dirs
with `<dir>/<task>/COMPLETED`, seqio's own rule) rather than read from `Task.cache_dir`, which
seqio memoises per Task object and would still name a directory this run removed.

The contents of `COMPLETED` (output format + the task's fingerprint) are
`gemma_tasks.cache_metadata.completed_contents`; after the job `record_shard_bytes` adds every data file's size.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence

from absl import logging
import seqio
import tensorflow as tf

from gemma_tasks import cache_fingerprint as fingerprint_lib
from gemma_tasks import cache_integrity as integrity
from gemma_tasks import cache_metadata
from cache_scripts import validate as validate_lib


@dataclasses.dataclass
class RunReport:
  output_cache_dir: str
  written: List[str] = dataclasses.field(default_factory=list)
  skipped: Dict[str, str] = dataclasses.field(default_factory=dict)
  cleaned: List[str] = dataclasses.field(default_factory=list)
  repaired: Dict[str, List[str]] = dataclasses.field(default_factory=dict)  # dir -> problems
  validation: List[validate_lib.TaskReport] = dataclasses.field(default_factory=list)
  pipeline_options: List[str] = dataclasses.field(default_factory=list)
  processes: int = 1  # processes running the pipeline's work (Beam's SDK workers)
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


@dataclasses.dataclass(frozen=True)
class TaskToWrite:
  name: str
  output_dir: str
  fingerprint: dict


def select_tasks(patterns: Optional[Sequence[str]], excluded: Optional[Sequence[str]] = ()):
  """Registered task names matched the way seqio's `run_pipeline` matches them (full regex).

  >>> select_tasks(["gemma_quiz_.*"], [])
  ['gemma_quiz_qa', 'gemma_quiz_facts']
  >>> select_tasks(["gemma_quiz_.*"], ["gemma_quiz_facts"])
  ['gemma_quiz_qa']
  """
  included = re.compile(r"(%s\Z)" % r"\Z|".join(patterns or [".*"]))
  excluded_re = re.compile(r"(%s\Z)" % r"\Z|".join(excluded or []))
  return [t for t in seqio.TaskRegistry.names()
          if included.match(t) and not excluded_re.match(t)]


def find_cache(task_name: str) -> Optional[str]:
  """The task's complete cache in seqio's global cache dirs (the first, as seqio looks), or None.

  >>> import shutil, tempfile; d = tempfile.mkdtemp(); saved = list(seqio.utils.get_global_cache_dirs())
  >>> os.makedirs(f"{d}/gemma_quiz_qa"); open(f"{d}/gemma_quiz_qa/COMPLETED", "w").close()
  >>> seqio.utils.set_global_cache_dirs([f"{d}/no_such_dir", d])
  >>> find_cache("gemma_quiz_qa") == f"{d}/gemma_quiz_qa", find_cache("gemma_en_de_libreoffice")
  (True, None)
  >>> seqio.utils.set_global_cache_dirs(saved); shutil.rmtree(d)
  """
  for d in seqio.utils.get_global_cache_dirs():
    task_dir = os.path.join(d, seqio.get_task_dir_from_name(task_name))
    try:
      if tf.io.gfile.exists(os.path.join(task_dir, "COMPLETED")):
        return task_dir
    except (tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError) as e:
      logging.warning("Task %s: cannot look in cache dir %s: %s", task_name, task_dir, e)
  return None


def cache_problems(task: seqio.Task, cache_dir: str) -> List[str]:
  """What `integrity` finds wrong with the files of every split of `task` at `cache_dir`."""
  meta = cache_metadata.read_metadata(cache_dir)
  return [problem for split in task.splits
          for problem in integrity.split_problems(
              cache_dir, split, cache_metadata.output_format_of(cache_dir, split), meta)]


def make_output_dir(path: str) -> None:
  """Creates `path`; a path that cannot be a directory is a `ValueError` saying why.

  >>> import tempfile
  >>> with tempfile.NamedTemporaryFile(suffix="-notes.txt") as f:
  ...   make_output_dir(f.name + "/cache")
  Traceback (most recent call last):
  ...
  ValueError: --output_cache_dir /tmp/...-notes.txt/cache: /tmp/...-notes.txt is a file, not a directory
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


def plan_tasks(names: Sequence[str], output_cache_dir: str, report: RunReport, *,
               overwrite: bool = False, ignore_other_caches: bool = False) -> List[TaskToWrite]:
  """The tasks to write (see the module docstring); skips, clean-ups and repairs go to `report`.

  Removes the task directories in `output_cache_dir` that are about to be written (incomplete,
  damaged, or overwritten), so the job starts from nothing.
  """
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
    cached_at = find_cache(name)
    damage = cache_problems(task, cached_at) if cached_at and not overwrite else []
    if damage and cached_at == out_dir:
      # Not "already cached": its files are not what was written. Derived data: write it again.
      logging.warning("Rebuilding damaged cache of %s at %s: %s", name, out_dir, "; ".join(damage))
      tf.io.gfile.rmtree(out_dir)
      report.repaired[out_dir] = damage
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
    if tf.io.gfile.exists(out_dir):
      # --overwrite (or --ignore_other_caches) of a complete cache here: seqio's rule, rewrite.
      logging.warning("Overwriting the cache of %s in %s", name, out_dir)
      tf.io.gfile.rmtree(out_dir)
    to_write.append(TaskToWrite(name, out_dir, fingerprint_lib.task_fingerprint(task)))
  return to_write


def remove_beam_temp(task_dirs: Sequence[str]) -> None:
  """Removes Beam's `beam-temp-*` directories (left in a task dir when a run fails)."""
  for d in task_dirs:
    for tmp in tf.io.gfile.glob(os.path.join(d, "beam-temp-*")):
      tf.io.gfile.rmtree(tmp)


def incomplete(to_write: Sequence[TaskToWrite]) -> List[str]:
  """Names of the tasks without a `COMPLETED` file yet."""
  return [t.name for t in to_write
          if not tf.io.gfile.exists(os.path.join(t.output_dir, "COMPLETED"))]
