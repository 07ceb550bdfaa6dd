"""Offline caching of seqio Tasks with Beam, and the checked, faster `use_cached=True` path.

  * `cache_scripts.cache_tasks` — the job and its CLI (`python -m cache_scripts.cache_tasks`),
    built on seqio's `cache_tasks_main.run_pipeline` and `seqio.beam_utils`.
  * `cache_scripts.dataflow` — the same job on Dataflow (`--setup_file` ships gemma-seqio).
  * `cache_scripts.reader` — what `Task.get_dataset(use_cached=True)` goes through: a clear error
    for a missing cache, the fingerprint check, a batched-parse reader (TFRecord, ArrayRecord).
  * `cache_scripts.fingerprint`, `cache_scripts.integrity`, `cache_scripts.validate`,
    `cache_scripts.damage` (which shard a `DataLossError` came from) — the pieces behind those.

Importing this package installs the `reader` hooks into `seqio.Task` (idempotent), so plain seqio
calls get the checks:

>>> import cache_scripts, gemma_tasks, seqio
>>> seqio.add_global_cache_dirs(["/data/seqio_cache"])
>>> seqio.get_mixture_or_task("gemma_quiz_qa").get_dataset(split="test", use_cached=True)
CacheNotFoundError: Task 'gemma_quiz_qa' has no completed cache (a directory with a COMPLETED
file). Searched:
  /data/seqio_cache/gemma_quiz_qa
...
"""
from gemma_seqio import cli_log

# `python -m cache_scripts.cache_tasks`: library output to a log file from here on, before the
# imports below load TensorFlow (see gemma_seqio.cli_log).
cli_log.start_if_run_as_module("cache_scripts")

from gemma_tasks import cached as reader  # noqa: E402  pylint: disable=g-import-not-at-top
from gemma_tasks.cached import (CacheCorruptError, CacheFingerprintError, CacheNotFoundError,
                                install, uninstall)


def add_cache_dirs(cache_dirs):
  """`seqio.add_global_cache_dirs(cache_dirs)`, making sure the checks are installed."""
  import seqio  # pylint: disable=g-import-not-at-top
  install()
  seqio.add_global_cache_dirs(list(cache_dirs))


install()
