"""Sampling strategies and the KV-cache generation loop (`model.decoding`)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import decoding
from model.config import tiny_gemma2
from model.decoding import Greedy, Temperature, TopK, TopP, generate
from model.transformer import forward, init_params

CONFIG = tiny_gemma2(vocab_size=300).replace(sliding_window_size=6)
PROMPTS = [[2, 17, 99, 205, 41, 7, 8, 9], [2, 250], [2, 3, 4, 5]]


@pytest.fixture(scope="module")
def params():
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  # Perturb everything but the embedding: random norms, yet logits of O(1) so sampling varies.
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
  return jax.tree.unflatten(tree, [
      x if "embedder" in path else x + 0.3 * jax.random.normal(k, x.shape)
      for x, k, path in zip(leaves, keys, paths)])


def test_strategies_are_frozen_and_hashable():
  for s in (Greedy(), Temperature(temperature=0.7), TopK(k=5), TopP(p=0.9)):
    assert hash(s) == hash(dataclasses.replace(s))
    with pytest.raises(dataclasses.FrozenInstanceError):
      object.__getattribute__(s, "__class__")  # noqa: B018 (attribute exists)
      s.temperature = 2.0
  with pytest.raises(ValueError):
    TopK(k=0)
  with pytest.raises(ValueError):
    TopP(p=0.0)
  with pytest.raises(ValueError):
    Temperature(temperature=0.0)


def test_strategy_selection_rules():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
  rng = jax.random.PRNGKey(0)
  assert Greedy().select(logits[:1], rng).tolist() == [0]
  top2 = np.asarray(TopK(k=2).select(logits, rng))
  assert set(top2) == {0, 1} and abs(np.mean(top2 == 0) - 0.5 / 0.8) < 0.03
  nucleus = np.asarray(TopP(p=0.7).select(logits, rng))   # 0.5 < 0.7 <= 0.8: tokens 0 and 1
  assert set(nucleus) == {0, 1}
  assert set(np.asarray(TopP(p=0.4).select(logits, rng))) == {0}
  temp = np.asarray(Temperature(temperature=1.0).select(logits, rng))
  assert abs(np.mean(temp == 3) - 0.05) < 0.02
  cold = np.asarray(Temperature(temperature=0.05).select(logits, rng))
  assert np.mean(cold == 0) > 0.99


@pytest.mark.parametrize("vocab,k", [(4096, 8), (4096, 1), (256_000 // 50, 8), (300, 8)])
def test_fast_top_k_and_argmax_equal_jax_ties_included(vocab, k):
  rows = jax.random.normal(jax.random.PRNGKey(vocab + k), (16, vocab))
  coarse = jnp.round(rows * 2) / 2                 # many exact ties, across chunks
  constant = jnp.zeros((2, vocab)).at[1, -1].set(1.0)   # all tied; one maximum in the last chunk
  for x in (rows, coarse, constant):
    values, indices = decoding.top_k(x, k)
    expected_values, expected_indices = jax.lax.top_k(x, k)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(decoding.argmax(x), jnp.argmax(x, axis=-1))


def test_batched_greedy_equals_full_forward_for_each_prompt(params):
  out = generate(CONFIG, params, PROMPTS, max_new_tokens=10, stop_ids=(), return_logits=True)
  assert out.tokens.shape == (3, 10) and out.tokens.dtype == jnp.int32
  np.testing.assert_array_equal(out.num_tokens, [10, 10, 10])
  for i, prompt in enumerate(PROMPTS):
    # The model is causal: one pass over prompt + output gives the logits of every step, and
    # greedy means each output token is the argmax at the position before it.
    full = forward(CONFIG, params, jnp.asarray([prompt + out.tokens[i].tolist()]))[0]
    assert out.tokens[i].tolist() == jnp.argmax(full[len(prompt) - 1:-1], -1).tolist()
    np.testing.assert_allclose(out.logits[i], full[len(prompt) - 1:-1], atol=2e-5)
    # scores: the sum of the model's log-probabilities of the chosen tokens
    lp = jax.nn.log_softmax(full[len(prompt) - 1:-1])
    np.testing.assert_allclose(out.scores[i], lp[jnp.arange(10), out.tokens[i]].sum(), rtol=1e-5)


def test_bfloat16_model_decodes_like_its_full_forward(params):
  # bfloat16 activations (the recipe's dtype): the prompt block's products against the cache
  # and the one-token steps must run on XLA:CPU, and agree with the uncached pass.
  cfg = CONFIG.replace(dtype="bfloat16")
  out = generate(cfg, params, PROMPTS, max_new_tokens=6, stop_ids=(), return_logits=True)
  for i, prompt in enumerate(PROMPTS):
    full = forward(cfg, params, jnp.asarray([prompt + out.tokens[i].tolist()]))[0]
    np.testing.assert_allclose(out.logits[i], full[len(prompt) - 1:-1], atol=0.1)


def test_stop_ids_end_rows_and_pad_with_zeros(params):
  free = generate(CONFIG, params, PROMPTS, max_new_tokens=8, stop_ids=())
  row = free.tokens[0].tolist()
  stop = row[3]                      # make the 4th greedy token of row 0 a stop id
  out = generate(CONFIG, params, PROMPTS, max_new_tokens=8, stop_ids=(stop,))
  first = row.index(stop)
  assert out.tokens[0].tolist() == row[:first + 1] + [0] * (8 - first - 1)
  assert int(out.num_tokens[0]) == first + 1
  for i in range(3):  # every row stops at its first stop token, which is returned
    n = int(out.num_tokens[i])
    assert out.tokens[i, n:].tolist() == [0] * (8 - n)
    assert stop not in out.tokens[i, :n - 1].tolist()


def test_forbidden_tokens_are_never_generated(params):
  free = generate(CONFIG, params, PROMPTS, max_new_tokens=8, stop_ids=())
  banned = tuple(sorted(set(np.asarray(free.tokens).ravel().tolist())))
  out = generate(CONFIG, params, PROMPTS, max_new_tokens=8, stop_ids=(), forbidden_ids=banned)
  assert not set(np.asarray(out.tokens).ravel().tolist()) & set(banned)
  sampled = generate(CONFIG, params, PROMPTS, max_new_tokens=8, stop_ids=(), forbidden_ids=banned,
                     strategy=Temperature(temperature=2.0), rng=jax.random.PRNGKey(5))
  assert not set(np.asarray(sampled.tokens).ravel().tolist()) & set(banned)


def test_budget_is_capped_by_the_cache(params):
  out = generate(CONFIG, params, PROMPTS, max_new_tokens=8, stop_ids=(), cache_length=12)
  # free slots: 12 - 8 = 4, 12 - 2 = 10 (capped at 8), 12 - 4 = 8
  np.testing.assert_array_equal(out.num_tokens, [4, 8, 8])
  assert out.tokens[0, 4:].tolist() == [0, 0, 0, 0]


def test_sampling_is_reproducible_and_depends_on_the_rng(params):
  kw = dict(max_new_tokens=12, stop_ids=(), strategy=TopP(p=0.95, temperature=1.5))
  a = generate(CONFIG, params, PROMPTS, rng=jax.random.PRNGKey(1), **kw).tokens
  b = generate(CONFIG, params, PROMPTS, rng=jax.random.PRNGKey(1), **kw).tokens
  c = generate(CONFIG, params, PROMPTS, rng=jax.random.PRNGKey(2), **kw).tokens
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert generate(CONFIG, params, PROMPTS, max_new_tokens=6, stop_ids=(),
                  strategy=TopK(k=1, temperature=3.0)).tokens.tolist() == \
      generate(CONFIG, params, PROMPTS, max_new_tokens=6, stop_ids=()).tokens.tolist()


def test_repeated_call_with_same_shapes_does_not_recompile(params):
  kw = dict(max_new_tokens=5, strategy=TopK(k=3), stop_ids=(1, 107))
  generate(CONFIG, params, PROMPTS, rng=jax.random.PRNGKey(0), **kw)
  traces = decoding.TRACE_COUNT["generate"]
  # Different prompts of the same padded shape, a new rng, an equal (not identical) strategy.
  other = [[2, 5, 6], [2, 7, 8, 9, 10], [2]]
  generate(CONFIG, params, other, rng=jax.random.PRNGKey(9), **dict(kw, strategy=TopK(k=3)))
  assert decoding.TRACE_COUNT["generate"] == traces
  generate(CONFIG, params, other, **dict(kw, max_new_tokens=6))   # a new static: one more trace
  assert decoding.TRACE_COUNT["generate"] == traces + 1


def test_continuing_a_cache_with_list_prompts_equals_one_prompt(params):
  """Prompts continuing a cache are padded to a multiple of 16; that padding must not run past
  the free slots (the cache write would be clamped and overwrite earlier slots)."""
  first, more = [2, 17, 99, 205, 41, 7, 8, 9], [30, 31, 32]
  head = generate(CONFIG, params, [first], max_new_tokens=1, stop_ids=(), cache_length=20)
  # 8 cached tokens + 3 new ones padded to 16 would need 24 of 20 slots.
  cont = generate(CONFIG, params, [more], max_new_tokens=4, stop_ids=(), cache=head.cache)
  whole = generate(CONFIG, params, [first + more], max_new_tokens=4, stop_ids=(),
                   cache_length=20)
  assert cont.tokens.tolist() == whole.tokens.tolist()
  np.testing.assert_allclose(cont.scores, whole.scores, rtol=1e-5, atol=1e-5)
  # A continuation whose real tokens do not fit is refused, naming the numbers.
  with pytest.raises(ValueError, match=r"13 tokens .* 12 free"):
    generate(CONFIG, params, [list(range(3, 16))], max_new_tokens=1, cache=head.cache)
