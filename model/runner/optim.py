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
import jax.numpy as jnp
import optax


def schedule(learning_rate: float, *, total_steps, warmup_steps: int = 100,
             end_factor: float = 0.1, resized_at=None) -> optax.Schedule:
  """0 -> learning_rate linearly over warmup, then cosine to learning_rate * end_factor (optax's
  `warmup_cosine_decay_schedule`, written out so that the length may be a traced value).

  `resized_at=(step, progress)`: the run's length was changed to `total_steps` at `step`, when
  `progress` of the cosine was done; from there the cosine runs on from that point to its end at
  `total_steps`, so the learning rate stays continuous however often the run is re-sized
  (`model.runner.train --fit_schedule_to_budget`). Steps before `step` are history: they follow
  the new length as if it had been the plan from the start. `total_steps` and `resized_at` may
  be jax values (the trainer passes them to its compiled step, so a re-sizing does not compile
  the step again); `resized_at=(warmup_steps, 0.0)` is the same schedule as None.

  >>> first = schedule(1.0, total_steps=200, warmup_steps=0, end_factor=0.0)
  >>> at = cosine_progress(100, total_steps=200, warmup_steps=0)            # half way: 0.5
  >>> longer = schedule(1.0, total_steps=400, warmup_steps=0, end_factor=0.0, resized_at=(100, at))
  >>> [round(float(f(s)), 4) for f, s in ((first, 100), (longer, 100), (longer, 250), (longer, 400))]
  [0.5, 0.5, 0.1464, 0.0]
  >>> plain = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, 0.1)
  >>> max(abs(float(plain(s) - schedule(1.0, total_steps=100, warmup_steps=10)(s)))
  ...     for s in range(0, 120, 7)) < 1e-6
  True
  """
  if isinstance(total_steps, int) and total_steps < 1:
    raise ValueError(f"total_steps must be >= 1, got {total_steps}")
  warmup = jnp.clip(total_steps - 1, 0, warmup_steps) if warmup_steps else 0
  end = learning_rate * end_factor

  def cosine(progress):
    return end + (learning_rate - end) * 0.5 * (1 + jnp.cos(jnp.pi * progress))

  def plain(count):
    ramp = learning_rate * count / jnp.maximum(warmup, 1)
    return jnp.where(count < warmup, ramp,
                     cosine(cosine_progress(count, total_steps=total_steps, warmup_steps=warmup)))

  if resized_at is None:
    return plain

  def resized(count):
    progress = cosine_progress(count, total_steps=total_steps, warmup_steps=warmup,
                               resized_at=resized_at)
    return jnp.where(count < resized_at[0], plain(count), cosine(progress))
  return resized


def cosine_progress(step, *, total_steps, warmup_steps,
                    resized_at=None):
  """The share of the cosine decay done at `step` (0 during warmup, 1 at `total_steps`)."""
  if resized_at is None:
    done = (step - warmup_steps) / jnp.maximum(total_steps - warmup_steps, 1)
  else:
    start, progress = resized_at
    done = progress + (step - start) / jnp.maximum(total_steps - start, 1) * (1.0 - progress)
  return jnp.clip(done, 0.0, 1.0)


def decay_mask(params):
  """True for matrices (decayed), False for vectors such as norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def adamw_with_clipping(learning_rate: float = 1e-3, *, total_steps, warmup_steps: int = 100,
                        end_factor: float = 0.1, weight_decay: float = 0.01, b1: float = 0.9,
                        b2: float = 0.98, eps: float = 1e-9, clip_norm: float = 1.0,
                        resized_at=None) -> optax.GradientTransformation:
  """clip_by_global_norm(clip_norm) then AdamW on the warmup + cosine schedule (the state's
  layout does not depend on the schedule: a re-sized run continues the same state)."""
  lr = schedule(learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
                end_factor=end_factor, resized_at=resized_at)
  return optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
