"""seqio preprocessors that put raw examples into Gemma dialog turns (TF, one op per batch).

Each one maps raw features to `inputs` (the user turn, ending with `<start_of_turn>model\\n`) and
`targets` (the answer + `<end_of_turn>`), the strings that the template in `template.py` defines:

>>> ds = translate_en_de(tf.data.Dataset.from_tensors({"en": "Find Bar", "de": "Suchleiste"}))
>>> {k: v.numpy() for k, v in next(iter(ds)).items()}   # the raw pair stays for evaluation
{'inputs': b'<start_of_turn>user\\nTranslate English to German: Find Bar<end_of_turn>\\n<start_of_turn>model\\n',
 'targets': b'Suchleiste<end_of_turn>',
 'source': b'Find Bar',
 'target': b'Suchleiste'}

The registered tasks' preprocessors run their string ops on groups of examples
(`gemma_tasks.batched`) and give the examples a per-example map would give, in the same order.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np
import seqio
import tensorflow as tf

from feature_converters import pipeline_options
from gemma_seqio import template
from gemma_tasks import aliases, batched

TRANSLATE_PREFIX = "Translate English to German: "
_PROMPT_HEAD, _PROMPT_TAIL = template.PROMPT_TEMPLATE.split("{}")
_ANSWER_TAIL = template.ANSWER_TEMPLATE.split("{}")[1]


def as_prompt(text: tf.Tensor) -> tf.Tensor:
  """tf.string user text -> the formatted prompt (same bytes as `template.format_prompt`)."""
  return tf.strings.join([_PROMPT_HEAD, text, _PROMPT_TAIL])


def as_response(text: tf.Tensor) -> tf.Tensor:
  """tf.string answer -> answer + `<end_of_turn>` (same bytes as `template.format_response`)."""
  return tf.strings.join([text, _ANSWER_TAIL])


def _non_empty(*texts: tf.Tensor) -> tf.Tensor:
  """Elementwise: every text has a non-whitespace character (works on scalars and vectors)."""
  ok = tf.constant(True)
  for t in texts:
    ok = tf.logical_and(ok, tf.strings.length(tf.strings.strip(t)) > 0)
  return ok


def translation(dataset: tf.data.Dataset, *, source_key: str, target_key: str,
                prefix: str) -> tf.data.Dataset:
  """{source, target} -> {inputs: prompt(prefix + source), targets: response(target)}.

  Pairs whose source or target is empty (after stripping whitespace) are dropped: an empty
  target teaches the model to stop at once and an empty source has nothing to translate.
  Everything else passes, and the original strings stay as `source`/`target` features for
  evaluation (e.g. the copy-the-source baseline).
  """
  def fmt(batch):
    keep = _non_empty(batch[source_key], batch[target_key])
    source = tf.boolean_mask(batch[source_key], keep)
    target = tf.boolean_mask(batch[target_key], keep)
    return {
        "inputs": as_prompt(tf.strings.join([prefix, source])),
        "targets": as_response(target),
        "source": source,
        "target": target,
    }

  return batched.over_batches(dataset, fmt, reads=(source_key, target_key))


def translate_en_de(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """The English->German prompt of the `gemma_*_ende` tasks ("Translate English to German: ...")."""
  return translation(dataset, source_key="en", target_key="de", prefix=TRANSLATE_PREFIX)


def choose_aliases(answers: tf.RaggedTensor) -> Tuple[tf.Tensor, tf.RaggedTensor, tf.Tensor]:
  """A batch's alias lists -> (keep, the kept lists' non-empty aliases, each kept list's pick).

  Aliases that are empty after stripping whitespace are removed; `keep[i]` says whether list
  `i` has an alias left, and each such list gets `aliases.pick_alias`. The masks are computed in
  the py_function that picks (numpy on the lengths; the strings stay in TF, gathered by index):
  as ragged TF ops they were a graph that every new pipeline of a QA task traced first (~60 ms
  of its start-up).

  >>> keep, kept, chosen = choose_aliases(tf.ragged.constant([["Ni", " "], ["", "\\t"], ["V"]]))
  >>> keep.numpy().tolist(), kept.to_list(), chosen.numpy().tolist()
  ([True, False, True], [[b'Ni'], [b'V']], [b'Ni', b'V'])
  """
  def pick(values, non_empty, row_splits):
    non_empty, row_splits = non_empty.numpy(), row_splits.numpy()
    counts = np.diff(np.concatenate([[0], np.cumsum(non_empty)])[row_splits])
    keep = counts > 0
    kept = np.flatnonzero(non_empty)
    kept_splits = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
    values = values.numpy().tolist()
    chosen = aliases.pick_utf8([values[i] for i in kept], kept_splits.tolist())
    # Numpy arrays, not lists: py_function would take a list for several outputs.
    return keep, kept.astype(np.int64), kept_splits, np.array(chosen, dtype=object)

  values = answers.flat_values
  keep, kept, row_splits, chosen = tf.py_function(
      pick, [values, _non_empty(values), answers.row_splits],
      [tf.bool, tf.int64, tf.int64, tf.string])
  for t in (keep, kept, row_splits, chosen):
    t.set_shape([None])
  return keep, tf.RaggedTensor.from_row_splits(tf.gather(values, kept), row_splits,
                                               validate=False), chosen


def qa(dataset: tf.data.Dataset, *, question_key: str = "question",
       answers_key: str = "answers", group_key: Optional[str] = None) -> tf.data.Dataset:
  """{question, answers[]} -> {inputs, targets: one alias, answers: all aliases}.

  Empty aliases are removed, and examples without any non-empty alias are dropped (nothing to
  train on or score against). With `group_key`, the example also keeps `group`: the last `/`
  part of that feature (the quiz's `src` "bsdgames/quiz/elements" -> "elements"), so metrics can
  be reported per group.

  >>> ds = tf.data.Dataset.from_tensors({"question": "What is the chemical symbol of Nickel?",
  ...                                    "answers": ["Ni"], "src": "bsdgames/quiz/elements"})
  >>> ex = next(iter(qa(ds, group_key="src")))
  >>> ex["targets"].numpy(), ex["group"].numpy()
  (b'Ni<end_of_turn>', b'elements')
  """
  keys = (question_key, answers_key) + ((group_key,) if group_key else ())

  def fmt(batch):
    answers = batch[answers_key]
    if not isinstance(answers, tf.RaggedTensor):
      answers = tf.RaggedTensor.from_tensor(answers)
    keep, answers, chosen = choose_aliases(answers)
    question = tf.boolean_mask(batch[question_key], keep)
    out = {
        "inputs": as_prompt(question),
        "targets": as_response(chosen),
        "question": question,
        "answers": answers,
    }
    if group_key:
      out["group"] = tf.strings.regex_replace(tf.boolean_mask(batch[group_key], keep), ".*/", "")
    return out

  return batched.over_batches(dataset, fmt, reads=keys)


def trivia_qa_tfds(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS `trivia_qa/unfiltered.nocontext` -> {inputs, targets: answer.value, answers: aliases}."""

  @seqio.map_over_dataset
  def fmt(ex):
    return {
        "inputs": as_prompt(ex["question"]),
        "targets": as_response(ex["answer"]["value"]),
        "question": ex["question"],
        "answers": ex["answer"]["aliases"],
    }

  return fmt(dataset)


def lm_text(dataset: tf.data.Dataset, *, text_key: str = "text") -> tf.data.Dataset:
  """{text} -> {inputs: "", targets: text} for language modelling (no template: raw prose).

  The empty `inputs` lets LM tasks mix with the chat tasks (seqio mixes only tasks with the
  same features); a PrefixLM converter then sees a plain LM example.
  """
  def fmt(batch):
    text = tf.boolean_mask(batch[text_key], _non_empty(batch[text_key]))
    return {"inputs": tf.fill(tf.shape(text), ""), "targets": text}

  return batched.over_batches(dataset, fmt, reads=(text_key,))


def chunk_targets(dataset: tf.data.Dataset,
                  sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """Splits each tokenized `targets` into consecutive chunks of `sequence_length['targets']`.

  Runs after `CacheDatasetPlaceholder` (it depends on the sequence length). No token is lost:
  the last chunk of an example holds the remainder; an example without tokens gives no chunk.
  `inputs` (empty for LM tasks) is empty on every chunk, and the other features are dropped.
  The chunks of a batch of examples are cut with one ragged op (`gemma_tasks.batched`), where a
  `flat_map` would build a dataset per example.

  >>> ds = tf.data.Dataset.from_tensors({"inputs": tf.zeros([0], tf.int32), "targets": tf.range(7)})
  >>> [x["targets"].numpy().tolist() for x in chunk_targets(ds, {"targets": 3})]
  [[0, 1, 2], [3, 4, 5], [6]]
  """
  return _chunks(dataset, sequence_length["targets"], eos_id=None)


def append_eos_and_chunk_targets(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                                 output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  """`seqio.preprocessors.append_eos`, then `chunk_targets`, in one step over batches.

  EOS (1) ends each example's `targets` when its feature has `add_eos`, so it marks the end of
  a document before the document is cut:

  >>> from gemma_tasks.builders import output_features
  >>> ds = tf.data.Dataset.from_tensors({"inputs": tf.zeros([0], tf.int32),
  ...                                    "targets": tf.range(10, 16)})
  >>> chunks = append_eos_and_chunk_targets(ds, {"targets": 4}, output_features(add_eos=True))
  >>> [x["targets"].tolist() for x in chunks.as_numpy_iterator()]
  [[10, 11, 12, 13], [14, 15, 1]]
  """
  feature = output_features["targets"]
  return _chunks(dataset, sequence_length["targets"],
                 eos_id=feature.vocabulary.eos_id if feature.add_eos else None)


def _chunks(dataset: tf.data.Dataset, length: int, eos_id: Optional[int]) -> tf.data.Dataset:
  if length < 1:
    raise ValueError(f"chunk_targets: sequence_length['targets'] must be >= 1, got {length}")
  dtype = dataset.element_spec["targets"].dtype

  def cut(batch):
    tokens = batch["targets"]
    if not isinstance(tokens, tf.RaggedTensor):
      tokens = tf.RaggedTensor.from_tensor(tokens)
    if eos_id is not None:   # seqio's append_eos on every row at once
      eos = tf.fill([tokens.nrows(), 1], tf.constant(eos_id, dtype))
      tokens = tf.concat([tokens, eos], axis=1)
    n = tokens.row_lengths()
    count = (n + length - 1) // length                      # chunks per example
    first = tf.repeat(tf.cumsum(count, exclusive=True), count)
    k = tf.range(tf.reduce_sum(count), dtype=count.dtype) - first   # chunk k of its example
    left = tf.repeat(n, count) - k * length                         # tokens from chunk k on
    chunks = tf.RaggedTensor.from_row_lengths(tokens.flat_values,
                                              tf.minimum(left, length), validate=False)
    return {"targets": chunks}

  chunks = batched.over_batches(dataset, cut, reads=("targets",))
  # `inputs` added per chunk, in the pulling thread: unbatching a [chunks, 0] tensor crashes
  # TF 2.21's `unbatch` (a segmentation fault), and an empty ragged row would unbatch to shape
  # [None] where `tf.zeros([0])` per example has shape [0].
  return pipeline_options.inline_map(
      chunks, lambda ex: {"inputs": tf.zeros([0], dtype), "targets": ex["targets"]})
