"""seqio 0.0.20 additions: a `JSONLogger` that creates its directory, an `Evaluator` by task.

(Needed by the gin files too, which bind `JSONLogger` by name.)

Used as `seqio.Evaluator(..., logger_cls=[seqio_fixes.JSONLogger], log_dir=...)`; the
evaluator gives each logger `log_dir` as its `output_dir`, which need not exist yet:

>>> import os, shutil, tempfile
>>> from model.runner import seqio_fixes
>>> tmp = tempfile.mkdtemp()
>>> logger = seqio_fixes.JSONLogger(os.path.join(tmp, "inference_eval"))   # not created yet
>>> logger("gemma_en_de_libreoffice", 100, {"bleu": seqio.metrics.Scalar(31.5)}, None, None, None)
>>> os.listdir(os.path.join(tmp, "inference_eval"))
['gemma_en_de_libreoffice-metrics.jsonl']
>>> with open(os.path.join(tmp, "inference_eval", "gemma_en_de_libreoffice-metrics.jsonl")) as f:
...   f.read()
'{"step": 100, "bleu": 31.5}\\n'
>>> shutil.rmtree(tmp)
"""
from typing import Optional

import seqio
import tensorflow as tf


class JSONLogger(seqio.JSONLogger):
  """`seqio.JSONLogger` that creates its output directory before writing (0.0.20 does not,
  and fails with NotFoundError on a fresh `log_dir`)."""

  def __call__(self, *args, **kwargs):
    tf.io.gfile.makedirs(self.output_dir)
    return super().__call__(*args, **kwargs)


class PerTaskEvaluator(seqio.Evaluator):
  """`seqio.Evaluator` that can evaluate one of its tasks at a time (`evaluate_task`), sharing
  the cached datasets and the loggers, so each sub-task of a mixture gets its own decode time
  and example count. `Evaluator.evaluate` runs over `eval_tasks`; while `evaluate_task` runs,
  that property holds the one task."""
  _selected: Optional[str] = None

  @property
  def eval_tasks(self):
    tasks = super().eval_tasks
    if self._selected is None:
      return tasks
    return [t for t in tasks if t.name == self._selected]

  def evaluate_task(self, task, **kwargs):
    """`evaluate(**kwargs)` of `task` alone; its metrics are computed before this returns."""
    if task.name not in {t.name for t in super().eval_tasks}:
      raise ValueError(f"{task.name!r} is not one of this Evaluator's tasks")
    self._selected = task.name
    try:
      metrics, outputs = self.evaluate(**kwargs)
      metrics.result()   # metrics run in a thread: finish before the task list is whole again
      return metrics, outputs
    finally:
      self._selected = None
