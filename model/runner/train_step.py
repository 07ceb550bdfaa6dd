"""The jitted training step: loss, gradients, one optimizer update. One builder for the trainer
(`model.runner.train`), the demo's step-time measurement and the model benchmark, so the step
they time is the step that trains.

>>> import jax, numpy as np, optax
>>> from model.config import tiny_gemma1
>>> from model.runner.t5x_model import GemmaDecoderOnlyModel
>>> model = GemmaDecoderOnlyModel(tiny_gemma1())
>>> params = model.get_initial_variables(jax.random.PRNGKey(0),
...                                      {"decoder_input_tokens": (2, 8)})["params"]
>>> tx = optax.adamw(1e-3)
>>> step = make_train_step(model, tx)
>>> tokens = np.full((2, 8), 5, np.int32)
>>> batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
...          "decoder_loss_weights": np.ones((2, 8), np.float32)}
>>> params, opt_state, metrics = step(params, tx.init(params), batch, 0, None)
>>> {"loss", "accuracy", "grad_norm"} <= set(metrics), bool(np.isfinite(metrics["loss"]))
(True, True)
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional


def make_train_step(model, tx, *, dropout_rng=None, out_shardings: Optional[Any] = None,
                    donate: bool = True) -> Callable:
  """`step(params, opt_state, batch, step, max_loss_positions[, hyper]) -> (params, opt_state,
  metrics)`, jitted.

  `model` is a `GemmaDecoderOnlyModel` (its `weighted_loss`), `tx` an optax transformation, or
  a function `hyper -> transformation` of the step's last argument `hyper` (a pytree of jax
  scalars, e.g. the schedule's length): the trainer re-sizes its schedule through it without
  compiling the step again. The optimizer state's layout must not depend on `hyper`.
  `metrics` are the loss's (`loss`, `accuracy`, ...) plus `grad_norm`, before clipping.
  `dropout_rng`: the root key of dropout, folded with `step` (None: no dropout, `step` unused).
  `max_loss_positions` is static (`model.runner.train.loss_positions_bucket`; None: logits at
  every position): one compilation per value. The old params and optimizer state are donated
  (their buffers reused for the new ones) unless `donate=False` (a profiler calling the step
  again on the same inputs). `out_shardings`: the jit's, for a mesh.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  tx_of = (lambda _: tx) if isinstance(tx, optax.GradientTransformation) else tx

  def step_fn(params, opt_state, batch, step, max_loss_positions, hyper=None):
    rng = jax.random.fold_in(dropout_rng, step) if dropout_rng is not None else None
    loss_fn = functools.partial(model.weighted_loss, max_loss_positions=max_loss_positions)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx_of(hyper).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, dict(metrics, grad_norm=grad_norm)

  kw = {} if out_shardings is None else {"out_shardings": out_shardings}
  return jax.jit(step_fn, donate_argnums=(0, 1) if donate else (), static_argnums=(4,), **kw)
