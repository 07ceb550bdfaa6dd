"""seqio 0.0.20 workarounds that need seqio at import time (gin binds `JSONLogger` by name).

>>> import seqio
>>> from model import seqio_fixes
>>> ev = seqio.Evaluator(..., logger_cls=[seqio_fixes.JSONLogger], log_dir="/new/dir")  # created
"""
import seqio
import tensorflow as tf


class JSONLogger(seqio.JSONLogger):
  """`seqio.JSONLogger` that creates its output directory before writing (0.0.20 does not,
  and fails with NotFoundError on a fresh `log_dir`)."""

  def __call__(self, *args, **kwargs):
    tf.io.gfile.makedirs(self.output_dir)
    return super().__call__(*args, **kwargs)
