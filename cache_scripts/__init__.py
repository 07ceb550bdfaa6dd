"""Offline caching of seqio Tasks with Beam (the writing side of the cache).

  * `cache_scripts.cache_tasks` — the job and its CLI (`python -m cache_scripts.cache_tasks`);
    `cache_scripts.pipeline` — its Beam graph, composed from `seqio.beam_utils`;
    `cache_scripts.options` — local/remote Beam options (`--workers`);
    `cache_scripts.metadata` — what to write, skip, clean or rebuild, and the run report.
  * `cache_scripts.dataflow` — the same job on Dataflow (`--setup_file` ships gemma-seqio).
  * `cache_scripts.validate` — checks what a run wrote; `cache_scripts.tfexample` — the records.

Reading a cache is `gemma_tasks`' side (`gemma_tasks.cached`: the named errors, the fingerprint
and integrity checks, the batched-parse reader). The tasks of `gemma_tasks` read that way with
plain seqio calls; any other task when asked, with `gemma_tasks.cached.checked_dataset`:

>>> import os, tempfile, gemma_tasks, seqio
>>> old_cache_dirs = list(seqio.utils.get_global_cache_dirs())
>>> empty = tempfile.mkdtemp()                    # e.g. /data/seqio_cache, nothing cached yet
>>> seqio.utils.set_global_cache_dirs([empty])
>>> seqio.get_mixture_or_task("gemma_quiz_qa").get_dataset(split="test", use_cached=True)
Traceback (most recent call last):
...
gemma_tasks.cached.CacheNotFoundError: Task 'gemma_quiz_qa' has no completed cache (a directory
with a COMPLETED file). Searched:
  .../gemma_quiz_qa
Build it with:
  python -m cache_scripts.cache_tasks --tasks=gemma_quiz_qa --output_cache_dir=DIR
and add DIR with seqio.add_global_cache_dirs([DIR]), or load with use_cached=False.
>>> seqio.utils.set_global_cache_dirs(old_cache_dirs); os.rmdir(empty)

Importing this package changes nothing in seqio.
"""
from gemma_seqio import cli_log

# `python -m cache_scripts.cache_tasks`: library output to a log file from here on, before the
# imports below load TensorFlow (see gemma_seqio.cli_log).
cli_log.start_if_run_as_module("cache_scripts")

# The errors of the read path, also importable from here.
from gemma_tasks.cached import (  # noqa: E402,F401  pylint: disable=g-import-not-at-top
    CacheCorruptError, CacheFingerprintError, CacheNotFoundError)
