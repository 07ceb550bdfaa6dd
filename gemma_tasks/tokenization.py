"""The tokenize step of every registered task (`builders` puts it in each task's preprocessors).

It is seqio's own `seqio.preprocessors.tokenize` (each output feature's vocabulary, with
`*_pretokenized` copies kept for evaluation). It is bound into a task's preprocessor list when
the task is registered, so it is a seam in the code, not a runtime switch: a faster step that
yields identical tokens is put here, and every task registered after the change uses it.
Replacing this attribute at run time does not change tasks already registered.
"""
import seqio

tokenize = seqio.preprocessors.tokenize
