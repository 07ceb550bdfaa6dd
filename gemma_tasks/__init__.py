"""gemma_tasks: Gemma vocabulary, dialog template, preprocessors, metrics and SeqIO tasks.

Importing the package registers the Tasks and Mixtures:

>>> import gemma_tasks, seqio
>>> seqio.get_mixture_or_task("gemma_en_de_libreoffice").splits
('train', 'validation', 'test')

It also turns on the checked cache path of `cache_scripts` (shipped in the same distribution):
`use_cached=True` without a cache raises `cache_scripts.CacheNotFoundError` naming the
directories searched, and a cache written from another vocabulary or other preprocessors raises
`cache_scripts.CacheFingerprintError` instead of being read.
"""
from gemma_seqio import cli_log

# `python -m gemma_tasks`: library output to a log file from here on, before the imports below
# load TensorFlow (see gemma_seqio.cli_log).
cli_log.start_if_run_as_module("gemma_tasks")

# pylint: disable=g-import-not-at-top,wrong-import-position
from gemma_tasks import mixtures, tasks  # noqa: E402
from gemma_tasks.registry import get_task_or_mixture
from gemma_seqio.special_tokens import (BOS_ID, END_OF_TURN_ID, EOS_ID, PAD_ID,
                                        START_OF_TURN_ID, UNK_ID)
from gemma_tasks.vocab import GemmaVocabulary, get_vocabulary

tasks.register()
mixtures.register()

try:
  # The cache checks belong to everyone who reads these tasks with use_cached=True, not only to
  # those who remember a second import. cache_scripts imports gemma_tasks lazily (no cycle).
  import cache_scripts  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
except ImportError:  # gemma_tasks copied without its sibling package: seqio's own cached path
  pass
