"""The dialog template reproduces gm.data.Seq2SeqTask's layout."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from gemma_seqio import template
from gemma_tasks.vocab import get_vocabulary


def test_documented_shift_mask_example():
  # The example in the gemma library's `make_seq2seq_fields` docstring.
  out = template.make_seq2seq_fields([10, 11, 12, 13], [20, 21, 1])
  assert out.input == [10, 11, 12, 13, 20, 21]
  assert out.target == [11, 12, 13, 20, 21, 1]
  assert out.target_mask == [0, 0, 0, 1, 1, 1]


def test_prompt_and_response_strings():
  assert template.format_prompt("Hello! I would love to visit France.") == (
      "<start_of_turn>user\nHello! I would love to visit France.<end_of_turn>\n"
      "<start_of_turn>model\n")
  assert template.format_response("Bonjour !") == "Bonjour !<end_of_turn>"


def test_token_layout_bos_once_eos_only_when_asked():
  v = get_vocabulary()
  p, r = template.encode_prompt_response(v.encode, "Hi", "Hallo")
  assert p[0] == 2 and p.count(2) == 1 and 2 not in r
  assert p[1] == 106 and p[-len(v.encode("<start_of_turn>model\n")):] == v.encode("<start_of_turn>model\n")
  assert r[-1] == 107 and 1 not in r
  _, r_eos = template.encode_prompt_response(v.encode, "Hi", "Hallo", add_eos=True)
  assert r_eos == r + [1]


def test_multi_turn():
  turns = [template.Turn(role="user", text="Hi"), template.Turn(role="model", text="Hello"),
           template.Turn(role="user", text="Bye"), template.Turn(role="model", text="Ciao")]
  inputs, targets = template.format_dialog(turns)
  assert inputs == (template.format_prompt("Hi") + "Hello<end_of_turn>\n"
                    + template.format_prompt("Bye"))
  assert targets == "Ciao<end_of_turn>"
  with pytest.raises(ValueError, match="last turn"):
    template.format_dialog(turns[:-1])
  with pytest.raises(ValueError, match="consecutive"):
    template.format_dialog([turns[0], turns[0], turns[1]])
  with pytest.raises(ValueError, match="role"):
    template.Turn(role="system", text="x")


def test_seqio_prefix_lm_with_bos_2_equals_gemma_fields():
  """Task features (no BOS) through a PrefixLM shift with BOS 2 == gm.data.Seq2SeqTask fields."""
  v = get_vocabulary()
  prompt, response = "Translate English to German: Open the file.", "Öffnen Sie die Datei."
  p, r = template.encode_prompt_response(v.encode, prompt, response)
  gm = template.make_seq2seq_fields(p, r)
  n = len(p) + len(r)
  ds = tf.data.Dataset.from_tensors({"inputs": tf.constant(p[1:], tf.int32),
                                     "targets": tf.constant(r, tf.int32)})
  conv = seqio.PrefixLMFeatureConverter(pack=False, bos_id=2)
  out = next(iter(conv(ds, {"inputs": len(p) - 1, "targets": len(r)})))
  np.testing.assert_array_equal(out["decoder_input_tokens"][: n - 1], gm.input)
  np.testing.assert_array_equal(out["decoder_target_tokens"][: n - 1], gm.target)
  np.testing.assert_array_equal(out["decoder_loss_weights"][: n - 1], gm.target_mask)


def test_docstring_examples_run():
  import doctest  # noqa: PLC0415
  from gemma_tasks import metrics, postprocessors, rates  # noqa: PLC0415
  for mod in (template, metrics, postprocessors, rates):
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0, mod.__name__

