"""The registered tasks' steps written one example at a time, the way seqio's own are.

This is the anchor for the batched steps in `gemma_tasks.preprocessors` and
`gemma_tasks.tokenization`: the same filters and strings, but a `tf.data` map (and a
SentencePiece op) per example, followed by `seqio.preprocessors.tokenize`; after the cache
placeholder, the LM task's `seqio.preprocessors.append_eos` and a `flat_map` per document where
ours cut a batch of documents at once. `benchmarks.pipeline`
measures our tasks next to these, and `tests/test_batched_steps.py` checks that both yield the
same examples.
"""
from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from gemma_tasks import metrics, preprocessors


_non_empty = preprocessors._non_empty  # the same filter condition, applied per example here


def translation(ds, *, source_key, target_key, prefix):
  ds = ds.filter(lambda ex: _non_empty(ex[source_key], ex[target_key]))
  return ds.map(lambda ex: {
      "inputs": preprocessors.as_prompt(tf.strings.join([prefix, ex[source_key]])),
      "targets": preprocessors.as_response(ex[target_key]),
      "source": ex[source_key], "target": ex[target_key]})


def pick_alias(aliases):
  """`gemma_tasks.aliases.pick_alias` written plainly: `metrics.token_f1` per pair."""
  norm = [metrics.normalize_answer(a) for a in aliases]

  def score(i):
    if "(" in aliases[i] or not norm[i]:
      return 0.0
    return sum(metrics.token_f1(norm[i], norm[j]) for j in range(len(aliases)) if j != i)

  return aliases[max(range(len(aliases)), key=lambda i: (score(i), -len(aliases[i]), -i))]


def qa(ds, *, question_key="question", answers_key="answers", group_key=None):
  ds = ds.filter(lambda ex: tf.reduce_any(_non_empty(ex[answers_key])))

  def pick(a):
    return pick_alias([x.decode() for x in a.numpy().tolist()]).encode()

  def fmt(ex):
    answers = tf.boolean_mask(ex[answers_key], _non_empty(ex[answers_key]))
    target = tf.py_function(pick, [answers], tf.string)
    target.set_shape([])
    out = {"inputs": preprocessors.as_prompt(ex[question_key]),
           "targets": preprocessors.as_response(target),
           "question": ex[question_key], "answers": answers}
    if group_key:   # the table of a quiz question: the last part of its `src`
      out["group"] = tf.strings.split(ex[group_key], "/")[-1]
    return out
  return ds.map(fmt)


def lm_text(ds, *, text_key="text"):
  ds = ds.filter(lambda ex: _non_empty(ex[text_key]))
  return ds.map(lambda ex: {"inputs": "", "targets": ex[text_key]})


def chunk_targets(ds, sequence_length):
  """`preprocessors.chunk_targets` one document at a time: a dataset of its chunks each."""
  length = sequence_length["targets"]

  def split(ex):
    tokens = ex["targets"]
    n = tf.size(tokens)
    full = n // length
    rem = n - full * length
    row_lengths = tf.concat([tf.fill([full], length), tf.reshape(rem, [1])[: tf.minimum(rem, 1)]], 0)
    chunks = tf.data.Dataset.from_tensor_slices(
        tf.RaggedTensor.from_row_lengths(tokens, row_lengths))
    return chunks.map(lambda t: {"inputs": tf.zeros([0], tokens.dtype), "targets": t})

  return ds.flat_map(split)


translate_en_de = functools.partial(translation, source_key="en", target_key="de",
                                    prefix=preprocessors.TRANSLATE_PREFIX)

# Per registered embedded task: its steps before the cache placeholder, one example at a time.
PRECACHE = {
    "gemma_en_de_libreoffice": [translate_en_de, seqio.preprocessors.tokenize],
    "gemma_en_de_gettext": [translate_en_de, seqio.preprocessors.tokenize],
    "gemma_en_de_libreoffice_ui": [translate_en_de, seqio.preprocessors.tokenize],
    "gemma_quiz_qa": [functools.partial(qa, group_key="src"), seqio.preprocessors.tokenize],
    "gemma_trivia_qa_open": [qa, seqio.preprocessors.tokenize],
    "gemma_lm_python_docs": [lm_text, seqio.preprocessors.tokenize],
}


# Per registered task whose steps after the cache placeholder are batched: those steps one
# example at a time (the others' post-cache steps are seqio's own and are kept).
POSTCACHE = {
    "gemma_lm_python_docs": [seqio.preprocessors.append_eos, chunk_targets],
}


def register_like(name: str, new_name: str) -> seqio.Task:
  """A plain `seqio.Task` with `name`'s source and features, but every step one example at a
  time: the per-example steps before the cache placeholder, and after it the task's own steps
  or their per-example form (`POSTCACHE`)."""
  task = seqio.get_mixture_or_task(name)
  placeholder = [isinstance(p, seqio.CacheDatasetPlaceholder)
                 for p in task.preprocessors].index(True)
  post = [task.preprocessors[placeholder],
          *POSTCACHE.get(name, task.preprocessors[placeholder + 1:])]
  seqio.TaskRegistry.remove(new_name)
  return seqio.TaskRegistry.add(
      new_name, source=task.source, preprocessors=[*PRECACHE[name], *post],
      output_features=task.output_features, postprocess_fn=task.postprocessor,
      metric_fns=[])
