"""`GemmaDecoderOnlyModel`: the T5X protocol (init, loss_fn, score_batch, predict_batch)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import tiny_gemma1
from model.decoding import Temperature
from model.runner.t5x_model import GemmaDecoderOnlyModel
from model.transformer import forward

CONFIG = tiny_gemma1(vocab_size=300)

# Two PrefixLM rows laid out as the Gemma converter lays them out (BOS 2 shifted in):
#   row 0: inputs [9, 4], targets [3, 107]       row 1: inputs [5, 6, 7], targets [8, 1]
BATCH = {
    "decoder_input_tokens":     np.array([[2, 9, 4, 3, 0, 0, 0, 0], [2, 5, 6, 7, 8, 0, 0, 0]]),
    "decoder_target_tokens":    np.array([[9, 4, 3, 107, 0, 0, 0, 0], [5, 6, 7, 8, 1, 0, 0, 0]]),
    "decoder_loss_weights":     np.array([[0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0]]),
    "decoder_causal_attention": np.array([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]]),
}
PROMPT_LENGTHS = [3, 4]


@pytest.fixture(scope="module")
def model_and_params():
  m = GemmaDecoderOnlyModel(CONFIG)
  shapes = {"decoder_input_tokens": (2, 8)}
  params = m.get_initial_variables(jax.random.PRNGKey(0), shapes)["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  params = jax.tree.unflatten(tree, leaves)
  return m, params


def hand_log_probs(params, batch):
  """log p(target_t | inputs_<=t) for every position, from the plain forward pass."""
  logits = forward(CONFIG, params, jnp.asarray(batch["decoder_input_tokens"]))
  lp = jax.nn.log_softmax(logits)
  targets = batch["decoder_target_tokens"][..., None]
  return np.take_along_axis(np.asarray(lp), targets, -1)[..., 0], logits


def test_initial_variables(model_and_params):
  m, _ = model_and_params
  variables = m.get_initial_variables(jax.random.PRNGKey(0), {"decoder_input_tokens": (4, 16)},
                                      {"decoder_input_tokens": jnp.int32})
  params = variables["params"]
  assert set(variables) == {"params", "params_axes"}
  assert params["embedder"]["input_embedding"].shape == (300, 64)
  assert set(params) == {"embedder", "final_norm", "layer_0", "layer_1"}


def test_every_parameter_has_logical_axis_names(model_and_params):
  """T5X's partitioner reads `params_axes`: one name per dimension of every parameter."""
  from flax import traverse_util
  from flax.linen import partitioning as nn_partitioning
  m, _ = model_and_params
  variables = m.get_initial_variables(jax.random.PRNGKey(0), {"decoder_input_tokens": (1, 8)})
  names = {k: tuple(v) for k, v in traverse_util.flatten_dict(
      nn_partitioning.get_axis_names(variables["params_axes"])).items()}
  shapes = traverse_util.flatten_dict(variables["params"])
  assert set(names) == set(shapes)
  for key, shape in shapes.items():
    assert len(names[key]) == len(shape.shape), key
  assert names[("embedder", "input_embedding")] == ("vocab", "embed")
  assert names[("layer_0", "attn", "q")] == ("embed", "heads", "kv")
  assert names[("layer_0", "attn", "k")] == ("embed", "kv_heads", "kv")
  assert names[("layer_0", "attn", "o")] == ("heads", "kv", "embed")
  assert names[("layer_1", "mlp", "down")] == ("mlp", "embed")
  assert names[("final_norm", "scale")] == ("embed",)


def test_loss_fn_metrics_are_clu_metrics_equal_to_the_scalars(model_and_params):
  """T5X merges clu metrics; computed, one step's equal `weighted_loss`'s scalars, and a
  merged window weighs accuracy by tokens."""
  from clu import metrics as clu_metrics
  m, params = model_and_params
  mz = GemmaDecoderOnlyModel(CONFIG, z_loss=1e-2)
  loss, metrics = jax.jit(mz.loss_fn)(params, BATCH, None)
  loss_s, scalars = mz.weighted_loss(params, BATCH, None)
  np.testing.assert_allclose(loss, loss_s, rtol=1e-6)
  assert all(isinstance(v, clu_metrics.Metric) for v in metrics.values())
  for name, value in scalars.items():
    np.testing.assert_allclose(metrics[name].compute(), value, rtol=1e-5, err_msg=name)
  one_row = {k: v[:1] for k, v in BATCH.items()}
  _, first = mz.loss_fn(params, one_row, None)
  _, first_s = mz.weighted_loss(params, one_row, None)
  second = {k: v[1:] for k, v in BATCH.items()}
  _, other = mz.loss_fn(params, second, None)
  _, other_s = mz.weighted_loss(params, second, None)
  merged = first["accuracy"].merge(other["accuracy"]).compute()
  expected = ((first_s["accuracy"] * first_s["weight_sum"] + other_s["accuracy"] *
               other_s["weight_sum"]) / (first_s["weight_sum"] + other_s["weight_sum"]))
  np.testing.assert_allclose(merged, expected, rtol=1e-6)
  np.testing.assert_allclose(first["weight_sum"].merge(other["weight_sum"]).compute(), 4)


def test_score_batch_is_the_sum_of_weighted_target_log_probs(model_and_params):
  m, params = model_and_params
  token_lp, _ = hand_log_probs(params, BATCH)
  expected = [token_lp[0, 2] + token_lp[0, 3], token_lp[1, 3] + token_lp[1, 4]]
  scores = m.score_batch(params, BATCH)
  assert scores.shape == (2,)
  np.testing.assert_allclose(scores, expected, rtol=1e-5)
  scores2, inter = m.score_batch(params, BATCH, return_intermediates=True)
  np.testing.assert_allclose(inter["decoder"]["token_scores"][0].sum(-1), scores2, rtol=1e-6)


def test_loss_fn_matches_hand_computation(model_and_params):
  m, params = model_and_params
  token_lp, logits = hand_log_probs(params, BATCH)
  w = BATCH["decoder_loss_weights"]
  ce = -(token_lp * w).sum() / w.sum()
  loss, metrics = jax.jit(m.weighted_loss)(params, BATCH, None)
  np.testing.assert_allclose(loss, ce, rtol=1e-5)
  np.testing.assert_allclose(metrics["cross_ent_loss"], ce, rtol=1e-5)
  assert float(metrics["weight_sum"]) == 4 and int(metrics["num_examples"]) == 2
  assert int(metrics["num_tokens"]) == 9
  correct = (np.argmax(np.asarray(logits), -1) == BATCH["decoder_target_tokens"]) * w
  np.testing.assert_allclose(metrics["accuracy"], correct.sum() / 4)

  z = 1e-2
  mz = GemmaDecoderOnlyModel(CONFIG, z_loss=z)
  log_z = np.asarray(jax.nn.logsumexp(logits, -1))
  loss_z, metrics_z = mz.weighted_loss(params, BATCH, None)
  np.testing.assert_allclose(metrics_z["z_loss"], z * (log_z ** 2 * w).sum() / w.sum(), rtol=1e-5)
  np.testing.assert_allclose(loss_z, ce + metrics_z["z_loss"], rtol=1e-5)

  summing = GemmaDecoderOnlyModel(CONFIG, loss_normalizing_factor=None)
  summed, _ = summing.weighted_loss(params, BATCH, None)
  np.testing.assert_allclose(summed, ce * 4, rtol=1e-5)


def test_loss_fn_gradients_and_dropout(model_and_params):
  m, params = model_and_params
  grads, _ = jax.grad(m.weighted_loss, has_aux=True)(params, BATCH, None)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads["layer_0"]["attn"]["q"]).max() > 0
  md = GemmaDecoderOnlyModel(CONFIG.replace(dropout_rate=0.5))
  a, _ = md.weighted_loss(params, BATCH, jax.random.PRNGKey(0))
  b, _ = md.weighted_loss(params, BATCH, jax.random.PRNGKey(1))
  c, _ = md.eval_fn(params, BATCH)
  assert float(a) != float(b)
  np.testing.assert_allclose(c, m.eval_fn(params, BATCH)[0], rtol=1e-6)


@pytest.mark.parametrize("positions", [4, 5, 8])
def test_logits_only_at_weighted_positions_give_the_same_loss_and_gradients(model_and_params,
                                                                           positions):
  """max_loss_positions=K computes logits at the K positions of largest weight only: with all
  4 weighted positions among them, loss, metrics and gradients equal the full computation
  (also with label smoothing and z-loss, which read the whole vocabulary row)."""
  for model in (model_and_params[0],
                GemmaDecoderOnlyModel(CONFIG, label_smoothing=0.1, z_loss=1e-2)):
    params = model_and_params[1]
    full = jax.value_and_grad(model.weighted_loss, has_aux=True)(params, BATCH, None)
    some = jax.jit(jax.value_and_grad(
        lambda p, b: model.weighted_loss(p, b, None, max_loss_positions=positions), has_aux=True))(
            params, BATCH)
    (loss, metrics), grads = full
    (loss_k, metrics_k), grads_k = some
    np.testing.assert_allclose(loss_k, loss, rtol=1e-5)
    for k in metrics:
      np.testing.assert_allclose(metrics_k[k], metrics[k], rtol=1e-5, err_msg=k)
    for g, g_k in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_k)):
      np.testing.assert_allclose(g_k, g, rtol=1e-4, atol=1e-5)  # jit vs eager rounding


def test_train_picks_loss_positions_per_batch():
  from model.runner.train import loss_positions_bucket
  w = BATCH["decoder_loss_weights"]                      # 4 weighted positions of 16
  assert loss_positions_bucket(BATCH, 4) == 4
  assert loss_positions_bucket(BATCH, 3) == 6
  assert loss_positions_bucket(BATCH, 16) is None         # no saving: every position
  assert loss_positions_bucket(BATCH, 0) is None          # turned off
  assert loss_positions_bucket({"decoder_target_tokens": BATCH["decoder_target_tokens"]}, 2) == 10
  assert w.sum() == 4


def test_packed_loss_counts_segments(model_and_params):
  m, params = model_and_params
  packed = {k: v.reshape(1, 16) for k, v in BATCH.items()}
  packed["decoder_segment_ids"] = np.array([[1] * 4 + [0] * 4 + [2] * 5 + [0] * 3])
  packed["decoder_positions"] = np.array([[0, 1, 2, 3, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0]])
  loss, metrics = m.weighted_loss(params, packed, None)
  np.testing.assert_allclose(loss, m.weighted_loss(params, BATCH, None)[0], rtol=1e-5)
  assert int(metrics["num_examples"]) == 2


def test_predict_batch_returns_only_the_continuation(model_and_params):
  m, params = model_and_params
  tokens, aux = m.predict_batch_with_aux(params, BATCH)
  assert tokens.shape == (2, 8) and tokens.dtype == jnp.int32 and aux["scores"].shape == (2,)
  for row, p in enumerate(PROMPT_LENGTHS):
    prompt = BATCH["decoder_input_tokens"][row, :p].tolist()
    out = tokens[row].tolist()
    # A prompt of p tokens leaves 8 - p slots; the rest of the row is 0.
    assert out[8 - p:] == [0] * p
    cont = out[:8 - p]
    # Greedy: each returned token is the argmax after prompt + the tokens before it. This holds
    # only if the row starts right after the prompt (no prefix tokens echoed back).
    full = forward(CONFIG, params, jnp.asarray([prompt + cont]))[0]
    assert cont == np.argmax(np.asarray(full[p - 1:-1]), -1).tolist()
    lp = jax.nn.log_softmax(full[p - 1:-1])
    expected = lp[jnp.arange(len(cont)), jnp.asarray(cont)].sum()
    np.testing.assert_allclose(aux["scores"][row], expected, rtol=1e-5)
  # The targets in the batch do not influence the prediction.
  other = dict(BATCH, decoder_input_tokens=np.where(BATCH["decoder_causal_attention"] == 1,
                                                   BATCH["decoder_input_tokens"], 42))
  np.testing.assert_array_equal(m.predict_batch(params, other), tokens)


def test_predict_batch_stops_and_respects_max_new_tokens(model_and_params):
  m, params = model_and_params
  tokens = m.predict_batch(params, BATCH)
  first = int(tokens[0, 0])
  stopper = GemmaDecoderOnlyModel(CONFIG, stop_ids=(first,))
  out = stopper.predict_batch(params, BATCH)
  assert out[0].tolist() == [first] + [0] * 7
  short = GemmaDecoderOnlyModel(CONFIG, max_new_tokens=2, stop_ids=())
  out = short.predict_batch(params, BATCH)
  np.testing.assert_array_equal(out[:, :2], tokens[:, :2])
  assert not np.any(out[:, 2:])


def test_predict_batch_num_decodes(model_and_params):
  m, params = model_and_params
  rng = jax.random.PRNGKey(3)
  params_dec = {"strategy": Temperature(temperature=1.5)}
  every, aux = m.predict_batch_with_aux(params, BATCH, rng, num_decodes=4, return_all_decodes=True,
                                        decoder_params=params_dec)
  assert every.shape == (2, 4, 8) and aux["scores"].shape == (2, 4)
  assert np.all(np.diff(np.asarray(aux["scores"]), axis=-1) >= 0)   # increasing, as T5X
  best, aux_best = m.predict_batch_with_aux(params, BATCH, rng, num_decodes=4,
                                            decoder_params=params_dec)
  np.testing.assert_array_equal(best, every[:, -1])
  np.testing.assert_allclose(aux_best["scores"], aux["scores"][:, -1])
  with pytest.raises(ValueError, match="decoder_params"):
    m.predict_batch_with_aux(params, BATCH, decoder_params={"beam_size": 4})


def test_predict_batch_jits_and_needs_the_prefix(model_and_params):
  m, params = model_and_params
  jitted = jax.jit(m.predict_batch)
  np.testing.assert_array_equal(jitted(params, BATCH), m.predict_batch(params, BATCH))
  with pytest.raises(ValueError, match="decoder_causal_attention"):
    m.predict_batch(params, {k: v for k, v in BATCH.items() if k != "decoder_causal_attention"})


def test_feature_converter_class_is_lazy_and_overridable():
  sentinel = object()
  m = GemmaDecoderOnlyModel(CONFIG, feature_converter_cls=sentinel)
  assert m.FEATURE_CONVERTER_CLS is sentinel
  try:
    import feature_converters  # noqa: F401
  except ImportError:
    pytest.skip("feature_converters not available")
  expected = feature_converters.GemmaPrefixLMFeatureConverter
  assert GemmaDecoderOnlyModel(CONFIG).FEATURE_CONVERTER_CLS is expected


def _t5x_label_smoothed_loss(logits, batch, smoothing):
  """T5X's definition by hand: cross-entropy with soft targets minus their entropy."""
  lp = np.asarray(jax.nn.log_softmax(logits))
  vocab = lp.shape[-1]
  low = smoothing / (vocab - 1)
  soft = np.full(lp.shape, low)
  np.put_along_axis(soft, batch["decoder_target_tokens"][..., None], 1 - smoothing, -1)
  entropy = -((1 - smoothing) * np.log(1 - smoothing) + (vocab - 1) * low * np.log(low))
  w = batch["decoder_loss_weights"]
  return (((-(soft * lp).sum(-1)) - entropy) * w).sum() / w.sum()


def test_label_smoothed_loss_has_t5x_value(model_and_params):
  """Same value as T5X's loss (a KL divergence: the soft targets' entropy subtracted)."""
  _, params = model_and_params
  logits = forward(CONFIG, params, jnp.asarray(BATCH["decoder_input_tokens"]))
  smoothed = GemmaDecoderOnlyModel(CONFIG, label_smoothing=0.1)
  loss, metrics = smoothed.weighted_loss(params, BATCH, None)
  np.testing.assert_allclose(loss, _t5x_label_smoothed_loss(logits, BATCH, 0.1), rtol=1e-5)
  np.testing.assert_allclose(metrics["cross_ent_loss"], loss, rtol=1e-6)


@pytest.mark.t5x
def test_label_smoothed_loss_equals_the_real_t5x_loss(model_and_params):
  losses = pytest.importorskip(
      "t5x.losses", reason="T5X is not installed: `make test-t5x` installs it")
  _, params = model_and_params
  logits = forward(CONFIG, params, jnp.asarray(BATCH["decoder_input_tokens"]))
  w = BATCH["decoder_loss_weights"]
  for smoothing, z in ((0.0, 0.0), (0.1, 0.0), (0.1, 1e-3)):
    total, _, _ = losses.compute_weighted_cross_entropy(
        logits, BATCH["decoder_target_tokens"], weights=w, label_smoothing=smoothing, z_loss=z,
        loss_normalizing_factor=float(w.sum()))
    ours, _ = GemmaDecoderOnlyModel(CONFIG, label_smoothing=smoothing, z_loss=z).weighted_loss(
        params, BATCH, None)
    np.testing.assert_allclose(ours, total, rtol=1e-5, err_msg=f"{smoothing}, {z}")
