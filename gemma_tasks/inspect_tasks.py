"""Reading registered tasks for people: examples as raw text, Gemma-formatted text and token ids.

>>> import gemma_tasks   # registers the tasks
>>> for line in describe_examples("gemma_quiz_qa", split="validation", n=1): print(line)
--- gemma_quiz_qa [validation] example 0
raw        question: 'What is the capital of Burundi?'  answers: ['Bujumbura']  group: 'africa'
formatted  inputs: '<start_of_turn>user\\nWhat is the capital of Burundi?<end_of_turn>\\n<start_of_turn>model\\n'
           targets: 'Bujumbura<end_of_turn>'
ids        inputs (20): [106, 402, 366, 108, 878, 419, 376, 2645, 415, 444, 416, 676, 3999, 4056,
                         107, 108, 106, 1519, 424, 108]
           targets (8): [4033, 4007, 4052, 407, 4012, 416, 4001, 107]
"""
from __future__ import annotations

import itertools
from typing import Iterator, List

import numpy as np
import seqio
import tensorflow as tf

from gemma_tasks.registry import get_task_or_mixture

_TOKEN_FEATURES = ("inputs", "targets")


def _text(v) -> str:
  v = v.numpy() if hasattr(v, "numpy") else v
  if isinstance(v, np.ndarray):
    return repr([x.decode("utf-8", "replace") for x in v.tolist()])
  return repr(v.decode("utf-8", "replace") if isinstance(v, bytes) else v)


def precache_examples(task: seqio.Task, split: str) -> tf.data.Dataset:
  """Examples after tokenization and before any length-dependent step (what a cache holds)."""
  ds = task.source.get_dataset(split=split, shuffle=False)
  return task.preprocess_precache(ds)


def describe_examples(name: str, *, split: str = "validation", n: int = 3) -> Iterator[str]:
  """Lines describing the first `n` examples of a task's split."""
  task = get_task_or_mixture(name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f"{name!r} is a mixture; show one of its tasks: "
                     f"{', '.join(t.name for t in task.tasks)}")
  if split not in task.splits:
    raise ValueError(f"task {name!r} has no split {split!r}; it has {list(task.splits)}")
  for i, ex in enumerate(itertools.islice(precache_examples(task, split), n)):
    yield f"--- {name} [{split}] example {i}"
    raw = {k: v for k, v in ex.items()
           if k not in _TOKEN_FEATURES and not k.endswith("_pretokenized")}
    if not raw:  # LM tasks: the raw text is the targets text itself.
      raw = {"text": ex["targets_pretokenized"]}
    yield "raw        " + "  ".join(f"{k}: {_text(v)[:200]}" for k, v in raw.items())
    first = True
    for k in _TOKEN_FEATURES:
      if f"{k}_pretokenized" in ex:
        yield ("formatted  " if first else "           ") + f"{k}: {_text(ex[f'{k}_pretokenized'])[:300]}"
        first = False
    first = True
    for k in _TOKEN_FEATURES:
      if k in ex:
        ids: List[int] = ex[k].numpy().tolist()
        shown = ids if len(ids) <= 40 else ids[:40] + ["..."]
        yield ("ids        " if first else "           ") + f"{k} ({len(ids)}): {shown}"
        first = False


def split_counts(name: str) -> dict:
  """Raw example counts per split, as the task's data source reports them."""
  task = get_task_or_mixture(name)
  return {s: task.num_input_examples(s) for s in task.splits}
