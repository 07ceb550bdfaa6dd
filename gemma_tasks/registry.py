"""Looking up registered names with a helpful error.

>>> import gemma_tasks   # registers the tasks
>>> get_task_or_mixture("gemma_en_de_librefofice")
Traceback (most recent call last):
ValueError: No Task or Mixture named 'gemma_en_de_librefofice'. Closest registered names:
gemma_en_de_libreoffice, gemma_en_de_libreoffice_ui, gemma_en_de_libreoffice_quiz, ...
"""
import difflib

import seqio


def get_task_or_mixture(name: str):
  """`seqio.get_mixture_or_task`, but an unknown name lists the closest registered names."""
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if name in names:
    return seqio.get_mixture_or_task(name)
  close = difflib.get_close_matches(name, sorted(names), n=5, cutoff=0.3)
  if not close:
    close = sorted(n for n in names if n.startswith("gemma_"))[:5]
  raise ValueError(f"No Task or Mixture named {name!r}. Closest registered names: "
                   f"{', '.join(close) or '(none registered)'}")
