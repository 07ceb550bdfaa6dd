"""The scalar metrics of `GemmaDecoderOnlyModel.weighted_loss` as the clu objects T5X merges.

T5X's trainer does not average numbers: it `merge`s `clu.metrics.Metric` objects across
microbatches and steps, then `compute`s them. This module maps each of our scalars to the metric
T5X's own models use for it (`t5x.models.compute_base_metrics`):

    loss, cross_ent_loss, z_loss            -> AveragePerStep (mean over steps)
    accuracy                                -> clu Average(total=correct, count=weight_sum)
    weight_sum, num_tokens, num_examples    -> Sum
    timing/*                                -> T5X's TimeRate / StepsPerTime (with T5X only)

so one step's computed metrics equal our trainer's scalars, and a merged window gives the
weighted accuracy over all its tokens (not a mean of per-step accuracies).

>>> step = dict(loss=2.0, cross_ent_loss=2.0, z_loss=0.0, weight_sum=4.0, num_tokens=6,
...             num_examples=2)
>>> a = from_scalars(dict(step, accuracy=0.5))
>>> b = from_scalars(dict(step, accuracy=1.0, weight_sum=12.0))
>>> float(a['accuracy'].merge(b['accuracy']).compute())    # (0.5 * 4 + 1.0 * 12) / 16
0.875

With T5X importable the per-step and sum metrics are T5X's own classes (`t5x.metrics`), so its
trainer sets their step counts; without it, equivalent clu metrics stand in.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import flax
import jax.numpy as jnp
from clu import metrics as clu_metrics

PER_STEP = ("loss", "cross_ent_loss", "z_loss")
SUMS = ("weight_sum", "num_tokens", "num_examples")


@flax.struct.dataclass
class _Sum(clu_metrics.Metric):
  """A total that merges by addition (T5X's `metrics.Sum` where T5X is not installed)."""
  total: jnp.ndarray

  def merge(self, other: "_Sum") -> "_Sum":
    return type(self)(total=self.total + other.total)

  def compute(self) -> jnp.ndarray:
    return self.total


def _per_step_and_sum():
  try:
    from t5x import metrics as t5x_metrics  # pylint: disable=g-import-not-at-top
  except ImportError:
    return (lambda total: clu_metrics.Average(total=jnp.asarray(total, jnp.float32),
                                              count=jnp.asarray(1, jnp.int32))), _Sum, None
  return t5x_metrics.AveragePerStep, t5x_metrics.Sum, t5x_metrics


def from_scalars(scalars: Mapping[str, Any]) -> Dict[str, clu_metrics.Metric]:
  """{name: scalar} of `weighted_loss` -> {name: clu Metric} for T5X's trainer and evaluator."""
  per_step, total_cls, t5x_metrics = _per_step_and_sum()
  metrics: Dict[str, clu_metrics.Metric] = {}
  for name in PER_STEP:
    metrics[name] = per_step(total=jnp.asarray(scalars[name], jnp.float32))
  for name in SUMS:
    metrics[name] = total_cls(jnp.asarray(scalars[name], jnp.float32))
  weight_sum = jnp.asarray(scalars["weight_sum"], jnp.float32)
  metrics["accuracy"] = clu_metrics.Average(
      total=jnp.asarray(scalars["accuracy"], jnp.float32) * weight_sum, count=weight_sum)
  if t5x_metrics is not None:  # the throughput figures T5X users read in TensorBoard
    metrics["timing/seqs_per_second"] = t5x_metrics.TimeRate.from_model_output(
        numerator=jnp.asarray(scalars["num_examples"], jnp.float32))
    metrics["timing/target_tokens_per_second"] = t5x_metrics.TimeRate.from_model_output(
        numerator=jnp.asarray(scalars["num_tokens"], jnp.float32))
    metrics["timing/steps_per_second"] = t5x_metrics.StepsPerTime.from_model_output()
    metrics["timing/seconds"] = t5x_metrics.Time()
  return metrics
