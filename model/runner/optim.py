"""The optimizer of `model.runner.train`, also bound by the T5X gin files (so T5X resumes our state).

AdamW with linear warmup, cosine decay to `end_factor * learning_rate`, global-norm gradient
clipping, and no weight decay on 1-D parameters (RMSNorm scales):

>>> tx = adamw_with_clipping(1e-3, total_steps=1000, warmup_steps=100)
>>> schedule(1e-3, total_steps=1000, warmup_steps=100)(100)       # peak after warmup
Array(0.001, dtype=float32, ...)

T5X wraps it as `optimizers.OptaxWrapper(adamw_with_clipping(...))`; its state dict is then
`{'param_states': {'0': <clip: empty>, '1': {'0': {count, mu, nu}, ...}}}`, the layout our
checkpoints use.
"""
from __future__ import annotations

import jax
import optax


def schedule(learning_rate: float, *, total_steps: int, warmup_steps: int = 100,
             end_factor: float = 0.1) -> optax.Schedule:
  """0 -> learning_rate linearly over warmup, then cosine to learning_rate * end_factor."""
  if total_steps < 1:
    raise ValueError(f"total_steps must be >= 1, got {total_steps}")
  warmup_steps = max(0, min(warmup_steps, total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=learning_rate * end_factor)


def decay_mask(params):
  """True for matrices (decayed), False for vectors such as norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def adamw_with_clipping(learning_rate: float = 1e-3, *, total_steps: int, warmup_steps: int = 100,
                        end_factor: float = 0.1, weight_decay: float = 0.01, b1: float = 0.9,
                        b2: float = 0.98, eps: float = 1e-9,
                        clip_norm: float = 1.0) -> optax.GradientTransformation:
  """clip_by_global_norm(clip_norm) then AdamW on the warmup + cosine schedule."""
  lr = schedule(learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
                end_factor=end_factor)
  return optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
