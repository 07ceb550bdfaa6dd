"""seqio 0.0.20 workarounds that need seqio at import time (gin binds `JSONLogger` by name).

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
import seqio
import tensorflow as tf


class JSONLogger(seqio.JSONLogger):
  """`seqio.JSONLogger` that creates its output directory before writing (0.0.20 does not,
  and fails with NotFoundError on a fresh `log_dir`)."""

  def __call__(self, *args, **kwargs):
    tf.io.gfile.makedirs(self.output_dir)
    return super().__call__(*args, **kwargs)
