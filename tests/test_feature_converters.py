"""Gemma feature converters: README examples, and equality with seqio's converters (bos_id=2).

The hypothesis tests build random task datasets (lengths 0..budget+5, empty and single-token
targets, sequences longer than the budget, PAD tokens inside sequences) and require our output
to equal seqio's, row for row, packed and unpacked. Fixtures live in this file.
"""
import doctest

import numpy as np
import pytest
import seqio
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqio import test_utils

import feature_converters as fc
from dataset_asserts import as_arrays, assert_same
from feature_converters import decoder_only, encoder_decoder, packing, seq2seq
from gemma_seqio import template
from gemma_seqio.special_tokens import BOS_ID, END_OF_TURN_ID, START_OF_TURN_ID

HYPOTHESIS = settings(max_examples=12, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def make_ds(examples, keys=("inputs", "targets")):
  """Task dataset of int32 [None] features from a list of dicts of lists."""
  def gen():
    for ex in examples:
      yield {k: np.asarray(ex[k], dtype=np.int32) for k in keys}
  return tf.data.Dataset.from_generator(
      gen, output_signature={k: tf.TensorSpec([None], tf.int32) for k in keys})


# ---- README examples (seqio's docstring tables, with Gemma's BOS 2) ---------------------------

def test_prefix_lm_packed_readme_example():
  ds = make_ds([{"inputs": [7, 8, 5, 1], "targets": [3, 9, 1]},
                {"inputs": [8, 4, 9, 3, 1], "targets": [4, 1]}])
  out = fc.GemmaPrefixLMFeatureConverter(pack=True)(ds, {"inputs": 7, "targets": 8})
  test_utils.assert_dataset(out, {
      "decoder_target_tokens": [7, 8, 5, 1, 3, 9, 1, 8, 4, 9, 3, 1, 4, 1, 0],
      "decoder_input_tokens": [2, 7, 8, 5, 1, 3, 9, 2, 8, 4, 9, 3, 1, 4, 2],
      "decoder_loss_weights": [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0],
      "decoder_positions": [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0],
      "decoder_segment_ids": [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0],
      "decoder_causal_attention": [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
  })


def test_prefix_lm_unpacked_readme_example():
  ds = make_ds([{"inputs": [9, 4, 6, 1], "targets": [3, 9, 1]}])
  out = fc.GemmaPrefixLMFeatureConverter(pack=False)(ds, {"inputs": 10, "targets": 4})
  test_utils.assert_dataset(out, {
      "decoder_target_tokens": [9, 4, 6, 1, 3, 9, 1, 0, 0, 0, 0, 0, 0, 0],
      "decoder_input_tokens": [2, 9, 4, 6, 1, 3, 9, 1, 0, 0, 0, 0, 0, 0],
      "decoder_loss_weights": [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
      "decoder_causal_attention": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  })


def test_prefix_lm_gemma_turns_docstring_example():
  ds = make_ds([{"inputs": [106, 8, 5, 106], "targets": [3, 9, 107]},
                {"inputs": [106, 4, 9, 3, 106], "targets": [4, 107]}])
  out = fc.GemmaPrefixLMFeatureConverter(pack=True)(ds, {"inputs": 7, "targets": 8})
  test_utils.assert_dataset(out, {
      "decoder_target_tokens": [106, 8, 5, 106, 3, 9, 107, 106, 4, 9, 3, 106, 4, 107, 0],
      "decoder_input_tokens": [2, 106, 8, 5, 106, 3, 9, 2, 106, 4, 9, 3, 106, 4, 2],
      "decoder_loss_weights": [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0],
      "decoder_positions": [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0],
      "decoder_segment_ids": [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0],
      "decoder_causal_attention": [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
  })


def test_lm_readme_examples():
  ds = make_ds([{"targets": [3, 9, 107]}, {"targets": [4, 107]}], keys=("targets",))
  test_utils.assert_dataset(fc.GemmaLMFeatureConverter(pack=True)(ds, {"targets": 6}), {
      "decoder_target_tokens": [3, 9, 107, 4, 107, 0],
      "decoder_input_tokens": [2, 3, 9, 2, 4, 2],
      "decoder_loss_weights": [1, 1, 1, 1, 1, 0],
      "decoder_positions": [0, 1, 2, 0, 1, 0],
      "decoder_segment_ids": [1, 1, 1, 2, 2, 0],
  })
  test_utils.assert_dataset(fc.GemmaLMFeatureConverter(pack=False)(ds, {"targets": 6}), [
      {"decoder_target_tokens": [3, 9, 107, 0, 0, 0],
       "decoder_input_tokens": [2, 3, 9, 107, 0, 0],
       "decoder_loss_weights": [1, 1, 1, 0, 0, 0]},
      {"decoder_target_tokens": [4, 107, 0, 0, 0, 0],
       "decoder_input_tokens": [2, 4, 107, 0, 0, 0],
       "decoder_loss_weights": [1, 1, 0, 0, 0, 0]},
  ])


def test_enc_dec_readme_example():
  ds = make_ds([{"inputs": [7, 8, 5, 1], "targets": [3, 9, 1]},
                {"inputs": [8, 4, 9, 3, 1], "targets": [4, 1]}])
  out = fc.GemmaEncDecFeatureConverter(pack=True)(ds, {"inputs": 10, "targets": 7})
  test_utils.assert_dataset(out, {
      "encoder_input_tokens": [7, 8, 5, 1, 8, 4, 9, 3, 1, 0],
      "encoder_segment_ids": [1, 1, 1, 1, 2, 2, 2, 2, 2, 0],
      "encoder_positions": [0, 1, 2, 3, 0, 1, 2, 3, 4, 0],
      "decoder_target_tokens": [3, 9, 1, 4, 1, 0, 0],
      "decoder_input_tokens": [2, 3, 9, 2, 4, 2, 0],
      "decoder_loss_weights": [1, 1, 1, 1, 1, 0, 0],
      "decoder_segment_ids": [1, 1, 1, 2, 2, 0, 0],
      "decoder_positions": [0, 1, 2, 0, 1, 0, 0],
  })


def test_seq2seq_docstring_example():
  ds = make_ds([{"inputs": [106, 1645, 108, 10, 107, 108, 106, 2516, 108],
                 "targets": [20, 21, 107]}])
  out = fc.GemmaSeq2SeqFeatureConverter()(ds, {"inputs": 10, "targets": 4})
  f, t = False, True
  test_utils.assert_dataset(out, {
      "input": [2, 106, 1645, 108, 10, 107, 108, 106, 2516, 108, 20, 21, 0, 0],
      "target": [[106], [1645], [108], [10], [107], [108], [106], [2516], [108], [20], [21],
                 [107], [0], [0]],
      "target_mask": [[f]] * 9 + [[t], [t], [t], [f], [f]],
  }, expected_dtypes={"input": tf.int32, "target": tf.int32, "target_mask": tf.bool})


def test_module_docstrings():
  for mod in (packing, decoder_only, encoder_decoder, seq2seq):
    result = doctest.testmod(mod)
    assert result.failed == 0, mod.__name__


# ---- equality with seqio on random datasets -----------------------------------------------

def token_lists(max_len, min_len=0, zeros=False):
  # Real Gemma features never hold PAD (0); seqio's packer treats an inner 0 specially and the
  # `zeros` variant checks that we reproduce that too.
  low = 0 if zeros else 1
  return st.lists(st.integers(low, 300), min_size=min_len, max_size=max_len)


@st.composite
def task_examples(draw, zeros=False, min_target=0):
  li = draw(st.integers(1, 8))
  lt = draw(st.integers(1, 8))
  examples = draw(st.lists(
      st.fixed_dictionaries({"inputs": token_lists(li + 5, zeros=zeros),
                             "targets": token_lists(lt + 5, min_len=min_target, zeros=zeros)}),
      min_size=0, max_size=40))
  per_call = draw(st.integers(1, 50))
  return examples, {"inputs": li, "targets": lt}, per_call


FAMILIES = {
    "prefix_lm": (seqio.PrefixLMFeatureConverter, fc.GemmaPrefixLMFeatureConverter),
    "lm": (seqio.LMFeatureConverter, fc.GemmaLMFeatureConverter),
    "enc_dec": (seqio.EncDecFeatureConverter, fc.GemmaEncDecFeatureConverter),
}


def run_both(family, examples, lengths, per_call, pack, **kwargs):
  ref_cls, our_cls = FAMILIES[family]
  keys = ("targets",) if family == "lm" else ("inputs", "targets")
  lengths = {k: lengths[k] for k in keys}
  ref = ref_cls(pack=pack, bos_id=BOS_ID, apply_length_check=False, **kwargs)
  ours = our_cls(pack=pack, apply_length_check=False, examples_per_call=per_call, **kwargs)
  return (as_arrays(ours(make_ds(examples, keys), lengths)),
          as_arrays(ref(make_ds(examples, keys), lengths)))


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@HYPOTHESIS
@given(data=task_examples())
def test_equals_seqio(family, pack, data):
  examples, lengths, per_call = data
  ours, ref = run_both(family, examples, lengths, per_call, pack)
  assert_same(ours, ref)


@pytest.mark.parametrize("family", ["prefix_lm", "enc_dec"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=task_examples(zeros=True))
def test_equals_seqio_with_pad_inside_sequences(family, data):
  examples, lengths, per_call = data
  ours, ref = run_both(family, examples, lengths, per_call, pack=True)
  assert_same(ours, ref)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=task_examples(), pack=st.booleans())
def test_prefix_lm_loss_on_everything_equals_seqio(data, pack):
  examples, lengths, per_call = data
  ours, ref = run_both("prefix_lm", examples, lengths, per_call, pack, loss_on_targets_only=False)
  assert_same(ours, ref)


def test_single_token_and_empty_targets_equal_seqio():
  examples = [{"inputs": [5, 6], "targets": []}, {"inputs": [7], "targets": [8]},
              {"inputs": [], "targets": [9]}, {"inputs": [], "targets": []},
              {"inputs": [4, 4, 4, 4, 4, 4, 4, 4], "targets": [3]}]
  for family in FAMILIES:
    for pack in (True, False):
      ours, ref = run_both(family, examples, {"inputs": 3, "targets": 2}, 2048, pack)
      assert_same(ours, ref)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_too_long_raises_like_seqio(family):
  ref_cls, our_cls = FAMILIES[family]
  keys = ("targets",) if family == "lm" else ("inputs", "targets")
  examples = [{"inputs": [5, 6, 7], "targets": [1, 2, 3, 4]}]
  lengths = {k: 3 for k in keys}
  for conv in (ref_cls(pack=True, bos_id=BOS_ID), our_cls(pack=True)):
    with pytest.raises(tf.errors.InvalidArgumentError, match="length not less than or equal"):
      as_arrays(conv(make_ds(examples, keys), lengths))


# ---- packing never lets a token see another segment ------------------------------------------

def segments_of(packed, unpacked_keys):
  """Every (row, segment id) of a packed dataset as {feature: values}, in row order."""
  out = []
  for r in range(packed["decoder_segment_ids"].shape[0]):
    seg_ids = packed["decoder_segment_ids"][r]
    for s in np.unique(seg_ids[seg_ids > 0]):
      where = seg_ids == s
      out.append({k: packed[k][r][where] for k in unpacked_keys + ["decoder_positions"]})
  return out


def assert_segment_is_example(segment, unpacked_row):
  n = len(segment["decoder_positions"])
  np.testing.assert_array_equal(segment["decoder_positions"], np.arange(n))
  for k, v in segment.items():
    if k != "decoder_positions":
      np.testing.assert_array_equal(v, unpacked_row[k][:n], err_msg=k)
  # The rest of the unpacked row is padding: the segment holds the whole (trimmed) example.
  assert not unpacked_row["decoder_target_tokens"][n:].any()


@pytest.mark.parametrize("packing_mode", [fc.IN_ORDER, fc.BEST_FIT])
@HYPOTHESIS
@given(data=task_examples(min_target=1), buffer=st.integers(1, 30))
def test_packed_segments_equal_unpacked_examples(packing_mode, data, buffer):
  examples, lengths, per_call = data
  kwargs = dict(apply_length_check=False, packing=packing_mode, best_fit_buffer_size=buffer,
                examples_per_call=per_call)
  packed = as_arrays(
      fc.GemmaPrefixLMFeatureConverter(pack=True, **kwargs)(make_ds(examples), lengths))
  unpacked = as_arrays(fc.GemmaPrefixLMFeatureConverter(pack=False, apply_length_check=False)(
      make_ds(examples), lengths))
  keys = ["decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
          "decoder_causal_attention"]
  segments = segments_of(packed, keys) if packed else []
  rows = [{k: unpacked[k][i] for k in keys} for i in range(len(examples))]
  if packing_mode == fc.IN_ORDER:
    assert len(segments) == len(rows)
    for seg, row in zip(segments, rows):
      assert_segment_is_example(seg, row)
  else:
    # Best fit reorders examples: every example must appear exactly once, intact.
    remaining = list(range(len(rows)))
    for seg in segments:
      n = len(seg["decoder_positions"])
      match = next(i for i in remaining
                   if np.array_equal(rows[i]["decoder_target_tokens"][:n],
                                     seg["decoder_target_tokens"])
                   and not rows[i]["decoder_target_tokens"][n:].any())
      assert_segment_is_example(seg, rows[match])
      remaining.remove(match)
    assert not remaining


def test_best_fit_is_denser_and_keeps_every_example():
  rng = np.random.default_rng(0)
  examples = [{"inputs": list(rng.integers(3, 300, rng.integers(1, 40))),
               "targets": list(rng.integers(3, 300, rng.integers(1, 30)))} for _ in range(600)]
  lengths = {"inputs": 48, "targets": 32}
  rows = {}
  for mode in (fc.IN_ORDER, fc.BEST_FIT):
    conv = fc.GemmaPrefixLMFeatureConverter(pack=True, packing=mode)
    out = as_arrays(conv(make_ds(examples), lengths))
    rows[mode] = out
    # Every example is there, whole: total non-padding tokens are the same.
    assert np.count_nonzero(out["decoder_target_tokens"]) == sum(
        len(e["inputs"]) + len(e["targets"]) for e in examples)
  fill = {m: packing.fill_ratio(r["decoder_target_tokens"]) for m, r in rows.items()}
  assert fill[fc.BEST_FIT] > fill[fc.IN_ORDER]
  num_rows = {m: len(r["decoder_target_tokens"]) for m, r in rows.items()}
  assert num_rows[fc.BEST_FIT] < num_rows[fc.IN_ORDER]


# ---- Gemma BOS: exactly one per sequence, at its start ---------------------------------------

@pytest.mark.parametrize("pack", [True, False])
def test_one_bos_per_sequence_on_the_registered_task(pack):
  import gemma_tasks  # noqa: F401,PLC0415  (registers the tasks)
  lengths = {"inputs": 64, "targets": 64}
  task = seqio.get_mixture_or_task("gemma_en_de_libreoffice")
  task_ds = task.get_dataset(lengths, split="validation", shuffle=False).take(200)
  for ex in task_ds.take(20).as_numpy_iterator():
    assert ex["inputs"][0] == START_OF_TURN_ID  # no BOS in the task features
    if len(ex["targets"]) < lengths["targets"]:  # else trimmed by the task
      assert ex["targets"][-1] == END_OF_TURN_ID
  out = as_arrays(fc.GemmaPrefixLMFeatureConverter(pack=pack)(task_ds, lengths))
  if pack:
    seg = out["decoder_segment_ids"]
    starts = (out["decoder_positions"] == 0) & (seg > 0)
    in_segment = seg > 0
  else:
    starts = np.zeros_like(out["decoder_target_tokens"], dtype=bool)
    starts[:, 0] = True
    in_segment = (out["decoder_target_tokens"] != 0) | starts
  inputs = out["decoder_input_tokens"]
  assert (inputs[starts] == BOS_ID).all()
  assert (inputs[in_segment & ~starts] != BOS_ID).all()
  assert (out["decoder_target_tokens"] != BOS_ID).all()


def test_refuses_seqio_bos_default_and_unsupported_options():
  with pytest.raises(ValueError, match="BOS id is 2"):
    fc.GemmaPrefixLMFeatureConverter(bos_id=0)
  with pytest.raises(ValueError, match="packing must be"):
    fc.GemmaLMFeatureConverter(packing="first_fit")
  with pytest.raises(NotImplementedError):
    fc.GemmaEncDecFeatureConverter(pack=False, passthrough_features={"x": None})
  with pytest.raises(ValueError, match="does not pack"):
    fc.GemmaSeq2SeqFeatureConverter(pack=True)


def test_works_through_seqio_get_dataset_with_batches():
  import gemma_tasks  # noqa: F401,PLC0415
  lengths = {"inputs": 32, "targets": 32}
  ds = seqio.get_dataset("gemma_en_de_libreoffice", lengths, dataset_split="validation",
                         shuffle=False, batch_size=4,
                         feature_converter=fc.GemmaPrefixLMFeatureConverter(pack=True))
  batch = next(ds.as_numpy_iterator())
  assert batch["decoder_target_tokens"].shape == (4, 64)
  assert set(batch) == {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                        "decoder_causal_attention", "decoder_segment_ids", "decoder_positions"}


# ---- Seq2Seq: the gm.data fields ----------------------------------------------------------

def reference_seq2seq(inputs, targets, max_length, truncate):
  """gm.data.Seq2SeqTask after tokenization: make_seq2seq_fields, then pad/truncate."""
  fields = template.make_seq2seq_fields([BOS_ID] + list(inputs), list(targets))
  out = {}
  for name, values in (("input", fields.input), ("target", fields.target),
                       ("target_mask", fields.target_mask)):
    if len(values) > max_length and not truncate:
      raise ValueError("too long")
    values = list(values)[:max_length]
    out[name] = np.array(values + [0] * (max_length - len(values)))
  return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=task_examples(), truncate=st.booleans())
def test_seq2seq_matches_gm_data_fields(data, truncate):
  examples, lengths, per_call = data
  max_length = lengths["inputs"] + lengths["targets"]
  conv = fc.GemmaSeq2SeqFeatureConverter(truncate=truncate, examples_per_call=per_call)
  try:
    expected = [reference_seq2seq(e["inputs"], e["targets"], max_length, truncate)
                for e in examples]
  except ValueError:
    with pytest.raises(tf.errors.InvalidArgumentError, match="Set `truncate=True`"):
      as_arrays(conv(make_ds(examples), lengths))
    return
  out = as_arrays(conv(make_ds(examples), lengths))
  for i, exp in enumerate(expected):
    np.testing.assert_array_equal(out["input"][i], exp["input"])
    np.testing.assert_array_equal(out["target"][i, :, 0], exp["target"])
    np.testing.assert_array_equal(out["target_mask"][i, :, 0], exp["target_mask"].astype(bool))
  if examples:
    assert out["target"].shape[1:] == (max_length, 1) and out["target_mask"].dtype == bool


# ---- the pure packing functions ------------------------------------------------------------

def naive_in_order(lengths, capacities, chunk):
  """Literal transcription of seqio's loop, for comparison."""
  rows, offsets, row = [], [], -1
  for start in range(0, lengths.shape[1], chunk):
    row += 1
    fill = [0] * len(capacities)
    for i in range(start, min(lengths.shape[1], start + chunk)):
      if not all(fill[k] + lengths[k, i] <= capacities[k] for k in range(len(capacities))):
        row += 1
        fill = [0] * len(capacities)
      rows.append(row)
      offsets.append(list(fill))
      fill = [f + lengths[k, i] for k, f in enumerate(fill)]
  return rows, offsets, row + 1


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 3), cap=st.integers(1, 9), chunk=st.integers(1, 12),
       raw=st.lists(st.integers(0, 9), max_size=60))
def test_pack_in_order_matches_seqio_loop(k, cap, chunk, raw):
  n = len(raw) // k
  lengths = np.minimum(np.array(raw[:n * k], dtype=np.int64).reshape(k, n), cap)
  rows, offsets, num = packing.pack_in_order(lengths, [cap] * k, chunk)
  exp_rows, exp_offsets, exp_num = naive_in_order(lengths, [cap] * k, chunk)
  assert rows.tolist() == exp_rows and num == exp_num
  assert offsets.T.tolist() == exp_offsets


@settings(max_examples=60, deadline=None)
@given(cap=st.integers(1, 12), buffer=st.integers(1, 20),
       raw=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=60))
def test_pack_best_fit_never_overflows_or_overlaps(cap, buffer, raw):
  lengths = np.minimum(np.array(raw, dtype=np.int64).reshape(-1, 2).T, cap)
  rows, offsets, num = packing.pack_best_fit(lengths, [cap, cap], buffer)
  for kf in range(2):
    used = {}
    for i in range(lengths.shape[1]):
      if not lengths[:, i].any():
        assert rows[i] == -1
        continue
      cells = set(range(offsets[kf, i], offsets[kf, i] + lengths[kf, i]))
      assert max(cells, default=0) < cap
      assert not cells & used.setdefault(rows[i], set())
      used[rows[i]] |= cells
  # Rows never span buffers.
  for start in range(0, lengths.shape[1], buffer):
    here = {r for r in rows[start:start + buffer] if r >= 0}
    later = {r for r in rows[start + buffer:] if r >= 0}
    assert not here & later


def test_seqio_evaluator_gets_the_same_examples_as_with_seqio_converter():
  import gemma_tasks  # noqa: F401,PLC0415
  lengths = {"inputs": 64, "targets": 32}
  datasets = []
  for conv in (fc.GemmaPrefixLMFeatureConverter(pack=False),
               seqio.PrefixLMFeatureConverter(pack=False, bos_id=BOS_ID)):
    ev = seqio.Evaluator("gemma_quiz_qa", feature_converter=conv, eval_split="validation",
                         sequence_length=lengths, use_memory_cache=True)
    datasets.append(list(ev.cached_model_datasets["gemma_quiz_qa"].as_numpy_iterator()))
  ours, ref = datasets
  assert len(ours) == len(ref) > 0
  for (i, a), (j, b) in zip(ours, ref):
    assert i == j
    assert_same(a, b)


def test_prefix_lm_agrees_with_the_dialog_template():
  """decoder inputs/targets/loss = make_seq2seq_fields(BOS + prompt, response) of the template."""
  from gemma_tasks.vocab import get_vocabulary  # noqa: PLC0415
  vocab = get_vocabulary()
  pairs = [("Translate English to German: Find Bar", "Suchleiste"), ("Hi", "Hallo!")]
  examples, expected = [], []
  for prompt, response in pairs:
    prompt_ids, response_ids = template.encode_prompt_response(vocab.encode, prompt, response)
    assert prompt_ids[0] == BOS_ID and BOS_ID not in prompt_ids[1:] + response_ids
    # Task features carry no BOS: the converter inserts it.
    examples.append({"inputs": prompt_ids[1:], "targets": response_ids})
    expected.append(template.make_seq2seq_fields(prompt_ids, response_ids))
  out = as_arrays(fc.GemmaPrefixLMFeatureConverter(pack=False)(
      make_ds(examples), {"inputs": 32, "targets": 16}))
  for i, fields in enumerate(expected):
    n = len(fields.input)
    np.testing.assert_array_equal(out["decoder_input_tokens"][i, :n], fields.input)
    np.testing.assert_array_equal(out["decoder_target_tokens"][i, :n], fields.target)
    np.testing.assert_array_equal(out["decoder_loss_weights"][i, :n], fields.target_mask)
    assert not out["decoder_loss_weights"][i, n:].any()


def test_accepts_ragged_rows_left_by_unbatch():
  examples = [{"inputs": [5, 6], "targets": [7]}, {"inputs": [8], "targets": [9, 10]}]
  ds = make_ds(examples).ragged_batch(2).unbatch()
  assert not isinstance(ds.element_spec["inputs"], tf.TensorSpec)
  ours = as_arrays(fc.GemmaPrefixLMFeatureConverter(pack=True)(ds, {"inputs": 2, "targets": 2}))
  ref = as_arrays(seqio.PrefixLMFeatureConverter(pack=True, bos_id=BOS_ID)(
      make_ds(examples), {"inputs": 2, "targets": 2}))
  assert_same(ours, ref)


@pytest.mark.parametrize("family", ["prefix_lm", "lm", "enc_dec"])
def test_unpacked_dataset_keeps_its_length_as_seqio_does(family):
  """T5X's inference loop sizes itself with `len(ds)`: known in, known out (unpacked)."""
  ours_cls, ref_cls, keys, lengths = {
      "prefix_lm": (fc.GemmaPrefixLMFeatureConverter, seqio.PrefixLMFeatureConverter,
                    ("inputs", "targets"), {"inputs": 4, "targets": 4}),
      "lm": (fc.GemmaLMFeatureConverter, seqio.LMFeatureConverter, ("targets",),
             {"targets": 4}),
      "enc_dec": (fc.GemmaEncDecFeatureConverter, seqio.EncDecFeatureConverter,
                  ("inputs", "targets"), {"inputs": 4, "targets": 4}),
  }[family]
  examples = [{"inputs": [5, 6], "targets": [7]}, {"inputs": [8], "targets": [9, 10]},
              {"inputs": [3], "targets": [4]}]
  ds = tf.data.Dataset.from_tensor_slices(
      {k: tf.ragged.constant([ex[k] for ex in examples]) for k in keys}).map(
          lambda ex: {k: v for k, v in ex.items()})
  ds = ds.map(lambda ex: {k: tf.cast(v, tf.int32) for k, v in ex.items()})
  assert int(ds.cardinality()) == 3
  ref = ref_cls(pack=False, bos_id=BOS_ID)(ds, lengths)
  ours = ours_cls(pack=False)(ds, lengths)
  assert int(ours.cardinality()) == int(ref.cardinality()) == 3
  assert len(ours) == 3 and len(list(ours)) == 3
  assert_same(as_arrays(ours), as_arrays(ref))
  # Packed rows are fewer than examples and not known in advance (seqio's are unknown too).
  assert int(ours_cls(pack=True)(ds, lengths).cardinality()) < 0


# ---- lengths that leave no room (issue: segfault / ZeroDivisionError) -------------------------

@pytest.mark.parametrize("make", [
    lambda: fc.GemmaSeq2SeqFeatureConverter(),
    lambda: fc.GemmaSeq2SeqFeatureConverter(truncate=True),
    lambda: fc.GemmaPrefixLMFeatureConverter(pack=True),
    lambda: fc.GemmaPrefixLMFeatureConverter(pack=False),
    lambda: fc.GemmaEncDecFeatureConverter(pack=True),
    lambda: fc.GemmaLMFeatureConverter(pack=True),
])
def test_zero_lengths_are_a_clear_error(make):
  converter = make()
  keys = tuple(converter.TASK_FEATURES)
  ds = make_ds([{k: [5, 6, 1] for k in keys}], keys=keys)
  with pytest.raises(ValueError, match=rf"{type(converter).__name__}: task feature "
                                       rf"'{keys[0]}' has length 0; .* at least 1"):
    converter(ds, {k: 0 for k in keys})


def test_missing_or_non_integer_length_is_a_clear_error():
  ds = make_ds([{"inputs": [5], "targets": [6]}])
  with pytest.raises(ValueError, match=r"missing features .*'targets'"):  # seqio's check
    fc.GemmaPrefixLMFeatureConverter(pack=True)(ds, {"inputs": 8})
  with pytest.raises(ValueError, match=r"task feature 'inputs' has length 8.5; .* at least 1"):
    fc.GemmaPrefixLMFeatureConverter(pack=True)(ds, {"inputs": 8.5, "targets": 8})


@pytest.mark.slow  # a fresh interpreter
def test_zero_lengths_through_seqio_get_dataset_in_a_fresh_interpreter():
  """Was a segfault (rc 139) of the whole interpreter; now a ValueError naming the feature."""
  import os
  import subprocess
  import sys
  import textwrap
  code = textwrap.dedent("""
      import seqio, gemma_tasks, feature_converters as fc
      for kw in ({}, {"truncate": True}):
        try:
          seqio.get_dataset("gemma_quiz_qa", {"inputs": 0, "targets": 0}, dataset_split="validation",
                            shuffle=False, feature_converter=fc.GemmaSeq2SeqFeatureConverter(**kw))
        except ValueError as e:
          print("ValueError |", e)
      """)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert len(lines) == 2 and all("task feature 'inputs' has length 0" in l for l in lines), out.stdout
