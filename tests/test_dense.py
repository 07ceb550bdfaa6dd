"""`model.dense` and `layers.capped_masked_softmax`: their hand-written backward passes give
autodiff's gradients, and every product of a bfloat16 training step runs on XLA:CPU's library
kernels (a dot outside them with bfloat16 operands and a float32 result fails at run time)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.dense import dense
from model.layers import NEG_INF, capped_masked_softmax

F32, BF16 = jnp.float32, jnp.bfloat16


def _inputs(k=12, n=5, lead=(2, 3)):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], lead + (k,), F32)
  w = jax.random.normal(keys[1], (k, n), F32)
  cot = jax.random.normal(keys[2], lead + (n,), F32)
  return x, w, cot


@pytest.mark.parametrize("w_transposed", [False, True])
def test_float32_dense_matches_einsum_and_its_gradients(w_transposed):
  x, w, cot = _inputs()
  stored = w.T if w_transposed else w

  def ours(x, stored):
    return jnp.sum(dense(x, stored, F32, w_transposed=w_transposed) * cot)

  def reference(x, stored):
    kn = stored.T if w_transposed else stored
    return jnp.sum(jnp.einsum("btk,kn->btn", x, kn, precision="highest") * cot)

  value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(x, stored)
  ref_value, ref_grads = jax.value_and_grad(reference, argnums=(0, 1))(x, stored)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for got, want in zip(grads, ref_grads):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_dense_rounds_like_a_bfloat16_product_and_keeps_float32_weight_gradients():
  x, w, cot = _inputs(k=64, n=48)
  y = dense(x.astype(BF16), w, BF16)
  exact = x.astype(BF16).astype(F32) @ w.astype(BF16).astype(F32)
  assert y.dtype == BF16
  np.testing.assert_allclose(y.astype(F32), exact, rtol=1e-2, atol=1e-2)
  assert dense(x.astype(BF16), w, BF16, F32).dtype == F32        # logits stay float32

  dx, dw = jax.grad(lambda x, w: jnp.sum(dense(x, w, BF16).astype(F32) * cot), (0, 1))(
      x.astype(BF16), w)
  assert dx.dtype == BF16 and dw.dtype == F32
  cot16 = cot.astype(BF16).astype(F32)
  want_dw = jnp.einsum("btk,btn->kn", x.astype(BF16).astype(F32), cot16)
  np.testing.assert_allclose(dw, want_dw, rtol=2e-2, atol=2e-2)


def _step_hlo(dtype):
  import optax  # pylint: disable=import-outside-toplevel
  from model.config import recipe_gemma2  # pylint: disable=import-outside-toplevel
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # pylint: disable=import-outside-toplevel
  from model.runner.train_step import make_train_step  # pylint: disable=import-outside-toplevel
  model = GemmaDecoderOnlyModel(recipe_gemma2(vocab_size=512, dtype=dtype))
  params = model.get_initial_variables(jax.random.PRNGKey(0),
                                       {"decoder_input_tokens": (2, 16)})["params"]
  tokens = np.arange(32, dtype=np.int32).reshape(2, 16) % 500 + 4
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
           "decoder_loss_weights": np.ones((2, 16), np.float32)}
  tx = optax.adamw(1e-3)
  step = make_train_step(model, tx, donate=False)
  compiled = step.lower(params, tx.init(params), batch, 0, None).compile()
  return compiled.as_text(), step, (params, tx.init(params), batch, 0, None)


def test_bfloat16_training_step_has_no_dot_outside_the_library_kernels():
  text, step, args = _step_hlo("bfloat16")
  entry = text[text.index("\nENTRY"):]
  library = entry.count("__ynn_fusion")
  if not library:
    pytest.skip("this XLA:CPU build has no YNNPACK fusions; nothing to check")
  bare = [line.strip()[:160] for line in entry.splitlines() if re.search(r"\bdot\(", line)]
  assert not bare, f"{len(bare)} dots outside the library kernels, e.g. {bare[:2]}"
  _, _, metrics = step(*args)      # and it runs
  assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("cap", [None, 50.0])
def test_capped_masked_softmax_matches_autodiff(cap):
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  logits = 30.0 * jax.random.normal(keys[0], (2, 1, 2, 6, 6), F32)
  cot = jax.random.normal(keys[1], logits.shape, F32)
  idx = np.arange(6)
  mask = np.broadcast_to(idx[:, None] >= idx[None, :], (2, 1, 1, 6, 6)).copy()
  mask[1, ..., 4:, :] = False                  # rows with every key masked (padding queries)

  def reference(logits):
    capped = logits if cap is None else jnp.tanh(logits / cap) * cap
    return jnp.sum(jax.nn.softmax(jnp.where(mask, capped, NEG_INF), axis=-1) * cot)

  ours = lambda logits: jnp.sum(capped_masked_softmax(logits, mask, cap) * cot)
  np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-6)
  got, want = jax.grad(ours)(logits), jax.grad(reference)(logits)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(got)[~np.broadcast_to(mask, got.shape)])   # none where masked
