"""gemma_tasks: Gemma vocabulary, dialog template, preprocessors, metrics and SeqIO tasks.

Importing the package registers the Tasks and Mixtures:

>>> import gemma_tasks, seqio
>>> seqio.get_mixture_or_task("gemma_en_de_libreoffice").splits
('train', 'validation', 'test')

Its tasks are `gemma_tasks.cached.CheckedCacheTask`s (registered with seqio's `task_cls=`):
`use_cached=True` without a cache raises `gemma_tasks.cached.CacheNotFoundError` naming the
directories searched, and a cache written from another vocabulary or other preprocessors raises
`gemma_tasks.cached.CacheFingerprintError` instead of being read. Other tasks get the same with
`gemma_tasks.cached.checked_dataset`. Importing the package changes nothing in seqio.
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
