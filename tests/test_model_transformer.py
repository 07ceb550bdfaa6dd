"""The Flax decoder on T5X features: packing, PrefixLM attention, the KV-cache contract."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import tiny_gemma1, tiny_gemma2
from model.transformer import Transformer, forward, init_cache, init_params

CONFIGS = {"gemma1": tiny_gemma1(vocab_size=512), "gemma2": tiny_gemma2(vocab_size=512).replace(
    sliding_window_size=5)}


def random_params(config, seed=0):
  """init_params with every leaf perturbed: norms away from 0, logits away from uniform."""
  params = init_params(config, jax.random.PRNGKey(seed))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


def log_probs(logits, targets):
  return np.asarray(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_row_equals_sequences_run_alone(name):
  config = CONFIGS[name]
  params = random_params(config)
  rs = np.random.RandomState(0)
  a, b = rs.randint(4, 512, size=9), rs.randint(4, 512, size=7)   # window 5 < both lengths
  packed = np.zeros((1, 20), np.int32)
  packed[0, :9], packed[0, 9:16] = a, b
  segments = np.array([[1] * 9 + [2] * 7 + [0] * 4])
  positions = np.array([list(range(9)) + list(range(7)) + [0] * 4])
  logits = jax.jit(Transformer(config).apply)({"params": params}, jnp.asarray(packed),
                                              decoder_segment_ids=jnp.asarray(segments),
                                              decoder_positions=jnp.asarray(positions))
  targets = jnp.asarray(np.roll(packed, -1, axis=1))
  packed_lp = log_probs(logits, targets)[0]
  for seq, start in ((a, 0), (b, 9)):
    alone = forward(config, params, jnp.asarray(seq[None]))
    alone_lp = log_probs(alone[:, :-1], jnp.asarray(seq[None, 1:]))[0]
    np.testing.assert_allclose(packed_lp[start:start + len(seq) - 1], alone_lp, atol=1e-5)


def test_prefix_attention_is_bidirectional_only_on_the_prefix():
  config = CONFIGS["gemma1"]
  params = random_params(config)
  tokens = jnp.asarray(np.random.RandomState(1).randint(4, 512, size=(1, 8)))
  prefix = jnp.asarray([[1, 1, 1, 0, 0, 0, 0, 0]])
  apply = jax.jit(lambda t: Transformer(config).apply({"params": params}, t,
                                                      decoder_causal_attention=prefix))
  base = np.asarray(apply(tokens))
  # Changing the last prefix token changes the logits at prefix position 0 (bidirectional) ...
  changed = np.asarray(apply(tokens.at[0, 2].set(7)))
  assert np.abs(changed[0, 0] - base[0, 0]).max() > 1e-3
  # ... while changing a token after the prefix leaves every earlier position untouched.
  changed = np.asarray(apply(tokens.at[0, 5].set(7)))
  np.testing.assert_allclose(changed[0, :5], base[0, :5], atol=1e-6)
  # Without the feature the model is plain causal.
  np.testing.assert_allclose(
      Transformer(config).apply({"params": params}, tokens), forward(config, params, tokens),
      atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decoding_equals_full_forward(name):
  """Prefill a padded batch with per-example lengths, then decode greedily one token at a time:
  the logits of every step equal those of a full forward pass over the sequence so far."""
  config = CONFIGS[name]
  params = random_params(config, seed=2)
  module = Transformer(config)
  prompts = [[2, 17, 99, 305, 41, 7], [2, 250]]
  lengths = jnp.array([len(p) for p in prompts])
  tokens = np.zeros((2, 8), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, :len(p)] = p
  cache = init_cache(config, 2, 20)
  prefill = jax.jit(lambda c, t, n: module.apply({"params": params, "cache": c}, t, prefill=True,
                                                 prefill_lengths=n, mutable=["cache"]))
  step = jax.jit(lambda c, t: module.apply({"params": params, "cache": c}, t, decode=True,
                                           mutable=["cache"]))
  logits, v = prefill(cache, jnp.asarray(tokens), lengths)
  cache = v["cache"]
  np.testing.assert_array_equal(cache["layer_0"]["attn"]["cache_index"], lengths)
  step_logits = logits[jnp.arange(2), lengths - 1]
  seqs = [list(p) for p in prompts]
  steps = [[], []]
  for _ in range(10):   # 6 + 10 > window 5: the local layers slide inside the cache
    nxt = jnp.argmax(step_logits, -1)
    for i in range(2):
      steps[i].append(np.asarray(step_logits[i]))
      seqs[i].append(int(nxt[i]))
    logits, v = step(cache, nxt[:, None])
    cache, step_logits = v["cache"], logits[:, 0]
  # The model is causal, so one full pass over the final sequence gives every step's logits.
  for i, p in enumerate(prompts):
    full = forward(config, params, jnp.asarray([seqs[i]]))[0]
    np.testing.assert_allclose(np.stack(steps[i]), full[len(p) - 1:len(p) + 9], atol=2e-5)
  np.testing.assert_array_equal(cache["layer_0"]["attn"]["cache_index"], lengths + 10)


def test_t5x_style_cache_initialisation():
  """T5X creates the cache by calling the module with decode=True on dummy full-length inputs."""
  config = CONFIGS["gemma2"]
  params = random_params(config)
  module = Transformer(config)
  _, v = jax.jit(lambda t: module.apply({"params": params}, t, decode=True, mutable=["cache"]))(
      jnp.ones((3, 12), jnp.int32))
  expected = init_cache(config, 3, 12)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), v["cache"]) == jax.tree.map(
      lambda x: (x.shape, x.dtype), expected)
  assert not any(np.any(x) for x in jax.tree.leaves(v["cache"]))


def test_bfloat16_activations_stay_close():
  config = CONFIGS["gemma2"]
  params = random_params(config)
  tokens = jnp.asarray(np.random.RandomState(4).randint(4, 512, size=(2, 10)))
  full = forward(config, params, tokens)
  half = forward(config.replace(dtype="bfloat16"), params, tokens)
  assert half.dtype == jnp.float32
  assert np.mean(np.argmax(full, -1) == np.argmax(half, -1)) > 0.8
