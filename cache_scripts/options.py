"""Beam options of the cache job: local runs on Beam's FnApiRunner, remote runners untouched.

Locally nothing may be downloaded: Beam's `--runner=DirectRunner` first tries to fetch the Prism
runner binary, so a local job always runs on the FnApiRunner (an explicit DirectRunner is
rewritten). `--workers N` is shorthand for Beam's own
`--direct_num_workers=N --direct_running_mode=multi_processing` (N SDK worker processes fed by
this process over gRPC); explicit `--direct_*` options win.

>>> assemble_pipeline_options([], workers=2)[:3]
['--runner=FnApiRunner', '--direct_num_workers=2', '--direct_running_mode=multi_processing']
>>> assemble_pipeline_options(["--runner=DirectRunner"], workers=1)
['--runner=FnApiRunner', '--direct_num_workers=1', '--direct_running_mode=in_memory']
>>> assemble_pipeline_options(["--runner=DataflowRunner", "--project=p"], workers=8)
['--runner=DataflowRunner', '--project=p']
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Iterator, List, Optional, Sequence

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "SwitchingDirectRunner")
# The directory that holds our packages (this file is cache_scripts/options.py).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def option_value(options: Sequence[str], name: str) -> Optional[str]:
  """Last value of `--name=value` / `--name value` in an argv-style list.

  >>> option_value(["--runner=DataflowRunner", "--project", "p"], "project")
  'p'
  """
  value = None
  for i, opt in enumerate(options):
    if opt.startswith(f"--{name}="):
      value = opt.split("=", 1)[1]
    elif opt == f"--{name}" and i + 1 < len(options):
      value = options[i + 1]
  return value


def without(options: Sequence[str], name: str) -> List[str]:
  """`options` without `--name=value` / `--name value`.

  >>> without(["--runner", "DirectRunner", "--x=1"], "runner")
  ['--x=1']
  """
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
  runner = option_value(options, "runner")
  return runner is None or runner.split(".")[-1] in LOCAL_RUNNERS


def running_mode(options: Sequence[str]) -> Optional[str]:
  """The local running mode of assembled options (None on a remote runner)."""
  return option_value(options, "direct_running_mode") if is_local(options) else None


def assemble_pipeline_options(pipeline_options: Sequence[str] = (), workers: int = 1) -> List[str]:
  """Beam options for the job: local ones filled in, remote ones passed through (see the module
  docstring)."""
  options = list(pipeline_options)
  if not is_local(options):
    return options
  if workers < 1:
    raise ValueError(f"--workers must be >= 1, got {workers}")
  runner = option_value(options, "runner")
  if runner is not None and runner.split(".")[-1] != "FnApiRunner":
    logging.getLogger(__name__).info(
        "Running with FnApiRunner instead of %s: Beam's DirectRunner first tries to download "
        "the Prism runner.", runner)
  options = without(options, "runner")
  local = ["--runner=FnApiRunner"]
  if option_value(options, "direct_num_workers") is None:
    local.append(f"--direct_num_workers={workers}")
  else:
    workers = int(option_value(options, "direct_num_workers"))
  if option_value(options, "direct_running_mode") is None:
    # in_memory runs in this process (no worker start-up cost, and tasks registered at run time
    # are visible); multi_processing gives real parallelism (the GIL limits threads).
    local.append("--direct_running_mode=" + ("multi_processing" if workers > 1 else "in_memory"))
  if workers > 1 and option_value(options, "sdk_harness_log_level_overrides") is None:
    # Worker processes log Beam's harness chatter at INFO; keep the progress lines readable.
    local.append('--sdk_harness_log_level_overrides={"apache_beam":"WARNING","__main__":"WARNING"}')
  return local + options


@contextlib.contextmanager
def worker_import_path(options: Sequence[str]) -> Iterator[None]:
  """While a `multi_processing` job runs: `PYTHONPATH` names this process's import path.

  Beam starts each SDK worker as `python -m apache_beam.runners.worker.sdk_worker_main` with
  this process's environment. The worker unpickles our transforms (module `cache_scripts`) and
  imports `--module_import` to find the Tasks by name, so it needs our packages and any
  directory a caller put on `sys.path`. Our own environment variable, restored afterwards.
  """
  if running_mode(options) != "multi_processing":
    yield
    return
  saved = os.environ.get("PYTHONPATH")
  paths = [PACKAGE_ROOT] + [p for p in sys.path if p] + ([saved] if saved else [])
  os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
  try:
    yield
  finally:
    if saved is None:
      os.environ.pop("PYTHONPATH", None)
    else:
      os.environ["PYTHONPATH"] = saved


_LOG_LOCATION = re.compile(r'log_location: "([^"]*?):(\d+)"')
_LOG_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


class WorkerRecords(logging.Filter):
  """Gives the records of Beam's SDK worker processes their own message and place back.

  A `multi_processing` worker sends its log records to this process, where Beam's job service
  logs each as `Worker: <the text of a LogEntry proto>` from its own module. This filter (on
  that module's logger) sets such a record's message and path to the worker's, so our progress
  lines from the workers are shown as ours (see `gemma_seqio.cli_log`); the rest goes to the
  log file as before.

  >>> r = logging.makeLogRecord({"msg": "Worker: %s", "args": (
  ...     'severity: INFO message: "a: 5 examples" log_location: "/r/cache_scripts/pipeline.py:9"',)})
  >>> WorkerRecords().filter(r), r.getMessage(), r.pathname, r.lineno
  (True, 'a: 5 examples', '/r/cache_scripts/pipeline.py', 9)
  """

  def filter(self, record):
    text = record.getMessage()
    if text.startswith("Worker: ") and "log_location:" in text:
      loc, msg = _LOG_LOCATION.search(text), _LOG_MESSAGE.search(text)
      if loc and msg:
        record.msg = msg.group(1).encode("latin-1", "backslashreplace").decode("unicode_escape")
        record.args = None
        record.pathname, record.lineno = loc.group(1), int(loc.group(2))
        record.filename = os.path.basename(record.pathname)
    return True


# Where Beam's job service logs what its SDK workers send.
WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"


@contextlib.contextmanager
def worker_logs_as_ours() -> Iterator[None]:
  """`WorkerRecords` on the logger of Beam's job service, at INFO, for the duration of a job."""
  logger, f = logging.getLogger(WORKER_LOGGER), WorkerRecords()
  saved_level = logger.level
  logger.addFilter(f)
  logger.setLevel(logging.INFO)
  try:
    yield
  finally:
    logger.removeFilter(f)
    logger.setLevel(saved_level)
