"""Logical axis names of every Gemma parameter and the one table that maps them to a mesh.

Each parameter is declared with flax's `param_with_axes`, so `module.init` returns, next to
`params`, a `params_axes` collection of the names below: what T5X's `PjitPartitioner` reads
(`train_state.as_logical_axes()`) and what our own mesh code maps with the same rules.

    embedder/input_embedding [V, D]          ('vocab', 'embed')
    attn/q [D, N, H]                         ('embed', 'heads', 'kv')
    attn/k, attn/v [D, K, H]                 ('embed', 'kv_heads', 'kv')
    attn/o [N, H, D]                         ('heads', 'kv', 'embed')
    mlp/gate, mlp/up [D, F]                  ('embed', 'mlp')
    mlp/down [F, D]                          ('mlp', 'embed')
    */scale (RMSNorm) [D]                    ('embed',)

Rules map logical names to mesh axes ('data', 'model'); a name without a rule is replicated.
`kv_heads` stays replicated: Gemma 2B has a single key/value head (multi-query attention),
which cannot be split across devices.

>>> dict(logical_axis_rules())['heads'], dict(logical_axis_rules(fsdp=True))['embed']
('model', 'data')
>>> to_mesh_axes(('vocab', 'embed'))        # a jax.sharding.PartitionSpec
P('model', None)
"""
from __future__ import annotations

from typing import Sequence, Tuple

VOCAB = "vocab"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
KV = "kv"
MLP = "mlp"
BATCH = "batch"

DATA_AXIS = "data"
MODEL_AXIS = "model"

LogicalAxisRules = Tuple[Tuple[str, object], ...]


def logical_axis_rules(*, fsdp: bool = False) -> LogicalAxisRules:
  """The logical -> mesh axis table, for T5X's `PjitPartitioner(logical_axis_rules=...)` and ours.

  Model parallelism splits the vocabulary, heads and MLP width over 'model' (Megatron style,
  T5X's standard rules). `fsdp=True` also splits the embedding dimension of every parameter
  over 'data' (T5X's `parameter_partitioning_dims=2`): parameters and optimizer state are then
  spread over all devices, gathered per layer when used.
  """
  return (
      (BATCH, DATA_AXIS),
      (VOCAB, MODEL_AXIS),
      (MLP, MODEL_AXIS),
      (HEADS, MODEL_AXIS),
      (KV_HEADS, None),
      (KV, None),
      (EMBED, DATA_AXIS if fsdp else None),
  )


def to_mesh_axes(names: Sequence[str], rules: LogicalAxisRules = None):
  """`jax.sharding.PartitionSpec` of one parameter's logical axis names under `rules`."""
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=g-import-not-at-top
  return nn_partitioning.logical_to_mesh_axes(tuple(names), rules or logical_axis_rules())
