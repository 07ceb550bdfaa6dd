"""Preprocessors: Gemma turns, alias choice, LM chunking (declarative expected examples)."""
import tensorflow as tf
from seqio import test_utils

from gemma_seqio import template
from gemma_tasks import aliases, preprocessors


def _ds(rows):
  return tf.data.Dataset.from_generator(
      lambda: iter(rows), output_signature={k: tf.TensorSpec([] if isinstance(v, str) else [None], tf.string)
                                            for k, v in rows[0].items()})


def test_translation_formats_turns_and_drops_empty_pairs():
  ds = preprocessors.translate_en_de(_ds([
      {"en": "Find Bar", "de": "Suchleiste"},
      {"en": "  ", "de": "Leer"},
      {"en": "Open", "de": ""},
      {"en": "Grüße 😀", "de": "Grüße 😀"},
  ]))
  expected = [
      {"inputs": template.format_prompt("Translate English to German: Find Bar"),
       "targets": template.format_response("Suchleiste"), "source": "Find Bar", "target": "Suchleiste"},
      {"inputs": template.format_prompt("Translate English to German: Grüße 😀"),
       "targets": template.format_response("Grüße 😀"), "source": "Grüße 😀", "target": "Grüße 😀"},
  ]
  test_utils.assert_dataset(ds, expected)


def test_qa_keeps_all_aliases_and_picks_one_deterministically():
  ds = preprocessors.qa(_ds([
      {"question": "Who?", "answers": ["Ford coppola", "", "Francis Ford Coppola", "Coppola, Francis Ford", "Coppola (film)"]},
      {"question": "None?", "answers": ["", " "]},
  ]))
  expected = [{
      "inputs": template.format_prompt("Who?"),
      "targets": template.format_response("Francis Ford Coppola"),
      "question": "Who?",
      "answers": ["Ford coppola", "Francis Ford Coppola", "Coppola, Francis Ford", "Coppola (film)"],
  }]
  test_utils.assert_dataset(ds, expected)


def test_pick_alias_rules():
  assert aliases.pick_alias(["Bh.", "BH (disambiguation)", "BH", "Bh", "B.H."]) == "BH"
  assert aliases.pick_alias(["only (one)"]) == "only (one)"
  assert aliases.pick_alias(["b", "a"]) == "b"  # tie: first in list order


def test_lm_chunking_loses_no_token():
  ds = tf.data.Dataset.from_tensor_slices(
      {"targets": tf.ragged.constant([list(range(7)), [9, 9], []])})
  ds = ds.map(lambda ex: {"inputs": tf.zeros([0], tf.int32), "targets": tf.cast(ex["targets"], tf.int32)})
  out = [ex["targets"].numpy().tolist() for ex in preprocessors.chunk_targets(ds, {"targets": 3})]
  assert out == [[0, 1, 2], [3, 4, 5], [6], [9, 9]]
  assert all(ex["inputs"].shape == (0,) for ex in preprocessors.chunk_targets(ds, {"targets": 3}))


def test_lm_chunks_end_each_document_with_eos():
  from gemma_tasks.builders import output_features
  docs = [list(range(10, 17)), [9, 9], [], [5, 6, 7]]   # 7 tokens, 2, none, exactly one chunk
  ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant(docs, tf.int32)})
  ds = ds.map(lambda ex: {"inputs": tf.zeros([0], tf.int32), "targets": ex["targets"],
                          "targets_pretokenized": "dropped"})
  expected = [{"inputs": [], "targets": t} for t in
              ([10, 11, 12, 13], [14, 15, 16, 1], [9, 9, 1], [1], [5, 6, 7, 1])]
  chunks = preprocessors.append_eos_and_chunk_targets(ds, {"targets": 4}, output_features(add_eos=True))
  test_utils.assert_dataset(chunks, expected)
  # Without add_eos it is `chunk_targets`: an empty document gives no chunk.
  test_utils.assert_dataset(
      preprocessors.append_eos_and_chunk_targets(ds, {"targets": 4}, output_features()),
      [{"inputs": [], "targets": t} for t in ([10, 11, 12, 13], [14, 15, 16], [9, 9], [5, 6, 7])])


def test_lm_text_has_empty_inputs():
  ds = preprocessors.lm_text(_ds([{"text": "Prose."}, {"text": ""}]))
  test_utils.assert_dataset(ds, [{"inputs": "", "targets": "Prose."}])
