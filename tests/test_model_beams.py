"""Beam search (`model.beams`): exact on a tiny vocabulary, greedy at one beam, T5X API."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import decoding
from model.beams import BeamSearch, _share_prompt_cache, beam_search
from model.config import tiny_gemma2
from model.runner.t5x_model import GemmaDecoderOnlyModel
from model.transformer import forward, init_cache, init_params

VOCAB = 6
STOP = 1
CONFIG = tiny_gemma2(vocab_size=VOCAB).replace(sliding_window_size=6)
PROMPTS = [[2, 3, 4, 5, 3], [2, 4], [2, 5, 5]]


@pytest.fixture(scope="module")
def params():
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  # Logits of O(1): many continuations with comparable probabilities, so ranking matters.
  return jax.tree.unflatten(tree, [x + 0.5 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def _log_prob(params, prompt, continuation):
  logits = forward(CONFIG, params, jnp.asarray([prompt + list(continuation)]))[0]
  lp = jax.nn.log_softmax(logits[len(prompt) - 1:-1])
  return float(lp[jnp.arange(len(continuation)), jnp.asarray(continuation)].sum())


def _finished_continuations(params, prompt, max_new):
  """Every finished continuation (ends at STOP, or has max_new tokens) with its log p, from
  one batched forward pass per length."""
  finished = []
  for n in range(1, max_new + 1):
    seqs = [list(s) for s in itertools.product(range(VOCAB), repeat=n)
            if STOP not in s[:-1] and (n == max_new or s[-1] == STOP)]
    logits = forward(CONFIG, params, jnp.asarray([prompt + s for s in seqs]))
    lp = jax.nn.log_softmax(logits[:, len(prompt) - 1:-1])
    chosen = jnp.take_along_axis(lp, jnp.asarray(seqs)[..., None], axis=-1)[..., 0].sum(-1)
    finished += [(s, float(v)) for s, v in zip(seqs, chosen)]
  return finished


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_enough_beams_find_the_exhaustive_best_with_stops_and_length_penalty(params, alpha):
  max_new, k = 3, 4
  # VOCAB ** (max_new - 1) live beams can hold every unfinished prefix: the search is exact.
  out = beam_search(CONFIG, params, PROMPTS, beam=BeamSearch(num_beams=VOCAB ** 2,
                                                             length_penalty=alpha),
                    max_new_tokens=max_new, stop_ids=(STOP,))
  for row, prompt in enumerate(PROMPTS):
    ranked = [(seq, lp, lp / ((5 + len(seq)) / 6) ** alpha)
              for seq, lp in _finished_continuations(params, prompt, max_new)]
    expected = sorted(ranked, key=lambda f: -f[2])[:k]
    for rank, (seq, lp, score) in enumerate(expected):
      n = int(out.num_tokens[row, rank])
      assert out.tokens[row, rank].tolist() == seq + [0] * (max_new - n)
      np.testing.assert_allclose(out.scores[row, rank], lp, rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(out.ranking_scores[row, rank], score, rtol=1e-4, atol=1e-5)
  assert np.all(np.diff(np.asarray(out.ranking_scores), axis=-1) <= 1e-6)   # best first


def test_a_few_beams_beat_or_equal_greedy_and_report_true_log_probs(params):
  greedy = decoding.generate(CONFIG, params, PROMPTS, max_new_tokens=5, stop_ids=(STOP,))
  out = beam_search(CONFIG, params, PROMPTS, beam=BeamSearch(num_beams=3, length_penalty=0.0),
                    max_new_tokens=5, stop_ids=(STOP,))
  assert np.all(np.asarray(out.scores[:, 0]) >= np.asarray(greedy.scores) - 1e-5)
  for row, prompt in enumerate(PROMPTS):
    for b in range(3):
      n = int(out.num_tokens[row, b])
      seq = out.tokens[row, b, :n].tolist()
      assert out.tokens[row, b, n:].tolist() == [0] * (5 - n)
      assert STOP not in seq[:-1] and (seq[-1] == STOP or n == 5)
      np.testing.assert_allclose(out.scores[row, b], _log_prob(params, prompt, seq), rtol=1e-4)


def test_one_beam_without_length_penalty_is_greedy(params):
  greedy = decoding.generate(CONFIG, params, PROMPTS, max_new_tokens=6, stop_ids=(STOP,))
  out = beam_search(CONFIG, params, PROMPTS, beam=BeamSearch(num_beams=1, length_penalty=0.0),
                    max_new_tokens=6, stop_ids=(STOP,))
  np.testing.assert_array_equal(out.tokens[:, 0], greedy.tokens)
  np.testing.assert_array_equal(out.num_tokens[:, 0], greedy.num_tokens)
  np.testing.assert_allclose(out.scores[:, 0], greedy.scores, rtol=1e-5)


def test_bfloat16_model_one_beam_is_its_greedy(params):
  # bfloat16 activations (the recipe's dtype, which the demo evaluates with 4 beams): the
  # prompt block, the beams' shared prompt and their steps all run on XLA:CPU.
  cfg = CONFIG.replace(dtype="bfloat16")
  greedy = decoding.generate(cfg, params, PROMPTS, max_new_tokens=6, stop_ids=(STOP,))
  out = beam_search(cfg, params, PROMPTS, beam=BeamSearch(num_beams=1, length_penalty=0.0),
                    max_new_tokens=6, stop_ids=(STOP,))
  np.testing.assert_array_equal(out.tokens[:, 0], greedy.tokens)
  four = beam_search(cfg, params, PROMPTS, beam=BeamSearch(num_beams=4), max_new_tokens=6,
                     stop_ids=(STOP,))
  assert np.all(np.asarray(four.num_tokens[:, 0]) > 0)


def test_forbidden_ids_budget_and_no_recompile(params):
  kw = dict(beam=BeamSearch(num_beams=3), max_new_tokens=6, stop_ids=())
  free = beam_search(CONFIG, params, PROMPTS, **kw)
  banned = tuple(sorted(set(np.asarray(free.tokens[:, 0]).ravel().tolist()) - {0}))
  out = beam_search(CONFIG, params, PROMPTS, forbidden_ids=banned, **kw)
  assert not set(np.asarray(out.tokens).ravel().tolist()) & set(banned)
  # Cache of 8 slots: the 5-token prompt leaves 3 tokens, the others 6 and 5.
  capped = beam_search(CONFIG, params, PROMPTS, cache_length=8, **kw)
  np.testing.assert_array_equal(capped.num_tokens, [[3] * 3, [6] * 3, [5] * 3])
  traces = decoding.TRACE_COUNT["beam_search"]
  beam_search(CONFIG, params, [[2, 5, 3, 3, 3], [2], [2, 3]],
              **dict(kw, beam=dataclasses.replace(kw["beam"])))
  assert decoding.TRACE_COUNT["beam_search"] == traces


def test_beam_search_settings_are_validated():
  with pytest.raises(ValueError, match="num_beams"):
    BeamSearch(num_beams=0)
  with pytest.raises(ValueError, match="length_penalty"):
    BeamSearch(length_penalty=-1.0)
  assert hash(BeamSearch()) == hash(BeamSearch(num_beams=4, length_penalty=0.6))


def test_predict_batch_with_beams_follows_t5x(params):
  # Two PrefixLM rows: prompts [2, 3, 4] and [2, 5]; the targets after them are ignored.
  batch = {"decoder_input_tokens": np.array([[2, 3, 4, 5, 5, 0, 0, 0], [2, 5, 3, 0, 0, 0, 0, 0]]),
           "decoder_causal_attention": np.array([[1, 1, 1, 0, 0, 0, 0, 0],
                                                 [1, 1, 0, 0, 0, 0, 0, 0]])}
  m = GemmaDecoderOnlyModel(CONFIG, strategy=BeamSearch(num_beams=3), stop_ids=(STOP,))
  every, aux = m.predict_batch_with_aux(params, batch, return_all_decodes=True)
  assert every.shape == (2, 3, 8) and aux["scores"].shape == (2, 3)
  direct = beam_search(CONFIG, params, [[2, 3, 4], [2, 5]], beam=BeamSearch(num_beams=3),
                       max_new_tokens=8, stop_ids=(STOP,), cache_length=8)
  # T5X order: increasing score, the best decode last; tokens padded to the batch length.
  np.testing.assert_array_equal(every[:, ::-1, :8], direct.tokens)
  np.testing.assert_allclose(aux["scores"][:, ::-1], direct.scores, rtol=1e-6)
  best, aux_best = m.predict_batch_with_aux(params, batch)
  np.testing.assert_array_equal(best, every[:, -1])
  # num_decodes sets the beam size, as in T5X's beam search.
  five, _ = m.predict_batch_with_aux(params, batch, num_decodes=5, return_all_decodes=True)
  assert five.shape == (2, 5, 8)
  # A greedy model switches to beams through decoder_params.
  greedy_model = GemmaDecoderOnlyModel(CONFIG, stop_ids=(STOP,))
  switched, _ = greedy_model.predict_batch_with_aux(
      params, batch, decoder_params={"strategy": BeamSearch(num_beams=3)})
  np.testing.assert_array_equal(switched, best)


def test_package_exports_do_not_shadow_the_module():
  # `from model import beams` (what the T5X model does) must give the module even after the
  # lazy exports resolved `model.beam_search` (the function), in a fresh interpreter.
  import subprocess
  import sys
  code = ("import inspect, model; f = model.beam_search; from model import beams; "
          "from model.runner.t5x_model import GemmaDecoderOnlyModel; "
          "assert inspect.ismodule(beams) and f is beams.beam_search and "
          "model.BeamSearch is beams.BeamSearch; print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
  assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_beams_share_one_copy_of_each_prompt_in_the_cache(params):
  # After prefill, the beam layout (prompts once, generated tokens per beam) gives the logits of
  # the full cache copied to every beam, for tokens that differ between the beams of a prompt;
  # sliding window 6 is crossed by the 5-token prompt + 3 new tokens.
  tokens, lengths = decoding.pad_prompts(PROMPTS)
  beams, steps = 2, 3
  cache = init_cache(CONFIG, len(PROMPTS), tokens.shape[1] + steps)
  _, cache, _ = decoding.prefill(CONFIG, params, cache, jnp.asarray(tokens), jnp.asarray(lengths),
                                 steps)
  full = jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0), cache)
  shared = _share_prompt_cache(cache, beams, tokens.shape[1], steps)
  assert shared["layer_0"]["attn"]["prompt_key"].shape[0] == len(PROMPTS)
  key = shared["layer_0"]["attn"]["cached_key"]
  assert (key.shape[0], key.shape[-1]) == (len(PROMPTS) * beams, steps)   # [R, K, H, M]
  rows = len(PROMPTS) * beams
  for step in range(steps):
    new = jnp.asarray([[3 + (row + step) % 3] for row in range(rows)])
    one = jnp.ones((rows,), jnp.int32)
    expected, full = decoding.apply_with_cache(CONFIG, params, full, new, one)
    got, shared = decoding.apply_with_cache(CONFIG, params, shared, new, one)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="one token per call"):
    decoding.apply_with_cache(CONFIG, params, shared, jnp.ones((rows, 2), jnp.int32),
                              jnp.full((rows,), 2, jnp.int32))
