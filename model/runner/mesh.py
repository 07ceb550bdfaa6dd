"""Training and evaluation on a JAX device mesh, on one host or many (`jax.distributed`).

The mesh has two named axes, T5X's: 'data' (batch rows; with FSDP also every parameter's
embedding dimension) and 'model' (heads, MLP width, vocabulary). Which parameter dimension goes
where is the one table of logical-axis rules in `model.partitioning`, read from the
`params_axes` every parameter carries, the same table T5X's partitioner uses.

    --mesh data=4,model=2          4-way data parallel x 2-way model parallel (8 devices)
    --mesh model=2                 'data' takes the remaining devices
    --mesh data=8 --fsdp           parameters and optimizer state split over all 8

On 8 devices:

    plan = MeshPlan.create(MeshConfig.parse("data=4,model=2"))
    dict(plan.mesh.shape)                # {'data': 4, 'model': 2}

The same on the one device of a CPU test (the partition specs do not depend on the mesh size):

>>> import jax
>>> from model.config import tiny_gemma1
>>> from model.transformer import Transformer
>>> MeshPlan.create(MeshConfig.parse("data=4,model=2"), devices=jax.devices()[:1])
Traceback (most recent call last):
ValueError: --mesh data=4,model=2 needs 8 devices; this job has 1
>>> plan = MeshPlan.create(MeshConfig.parse("data=1"), devices=jax.devices()[:1])
>>> dict(plan.mesh.shape)
{'data': 1, 'model': 1}
>>> tokens = jax.numpy.ones((1, 1), jax.numpy.int32)
>>> variables = jax.eval_shape(Transformer(tiny_gemma1()).init, jax.random.PRNGKey(0), tokens)
>>> shardings = plan.param_shardings(variables["params_axes"])
>>> shardings['embedder']['input_embedding'].spec, shardings['layer_0']['attn']['q'].spec
(P('model', None), P(None, 'model', None))

Parameters and optimizer state are created sharded (a jitted init with `out_shardings`, never
whole on one device); every process feeds its own rows of each batch
(`jax.make_array_from_process_local_data`), and orbax writes each process's shards of a
checkpoint.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from model import partitioning

DATA = partitioning.DATA_AXIS
MODEL = partitioning.MODEL_AXIS


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
  """Mesh shape: `data` x `model` devices (`data=None`: every device `model` leaves).

  >>> MeshConfig.parse("data=4,model=2")
  MeshConfig(data=4, model=2, fsdp=False)
  >>> MeshConfig.parse("")            # the default: all devices on 'data'
  MeshConfig(data=None, model=1, fsdp=False)
  """
  data: Optional[int] = None
  model: int = 1
  fsdp: bool = False

  @classmethod
  def parse(cls, text: str, *, fsdp: bool = False) -> "MeshConfig":
    sizes = {}
    for item in filter(None, (text or "").replace(" ", "").split(",")):
      name, _, value = item.partition("=")
      if name not in (DATA, MODEL) or not value.isdigit() or int(value) < 1:
        raise ValueError(f"--mesh expects data=N,model=M with positive sizes, got {text!r}")
      sizes[name] = int(value)
    return cls(data=sizes.get(DATA), model=sizes.get(MODEL, 1), fsdp=fsdp)


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, *, auto: bool = False) -> None:
  """Joins a multi-process JAX job: explicit (`--coordinator_address host:port
  --num_processes N --process_id i`), or `auto` from the environment JAX reads on TPU pods,
  SLURM and other clusters. A no-op for a single process."""
  if coordinator_address or num_processes or process_id is not None:
    if not (coordinator_address and num_processes and process_id is not None):
      raise ValueError("multi-host runs need all of --coordinator_address, --num_processes "
                       "and --process_id")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif auto:
    jax.distributed.initialize()


@dataclasses.dataclass(frozen=True)
class MeshPlan:
  """A mesh and the logical-axis rules that place parameters, state and batches on it."""
  mesh: Mesh
  rules: partitioning.LogicalAxisRules

  @classmethod
  def create(cls, config: MeshConfig = MeshConfig(), devices=None) -> "MeshPlan":
    devices = list(devices if devices is not None else jax.devices())
    model = config.model
    data = config.data or len(devices) // model
    if data * model > len(devices) or (data * model < len(devices) and jax.process_count() > 1):
      raise ValueError(f"--mesh data={data},model={model} needs {data * model} devices; "
                       f"this job has {len(devices)}")
    # One process may use fewer devices than it has (e.g. data=1: one device).
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))[:data * model]
    # Devices of one process side by side: each process's batch rows are contiguous.
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    mesh = Mesh(np.asarray(ordered).reshape(data, model), (DATA, MODEL))
    return cls(mesh, partitioning.logical_axis_rules(fsdp=config.fsdp))

  @property
  def data_size(self) -> int:
    return self.mesh.shape[DATA]

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def batch_sharding(self, ndim: int = 2) -> NamedSharding:
    """Rows over 'data', the rest whole."""
    return NamedSharding(self.mesh, PartitionSpec(DATA, *([None] * (ndim - 1))))

  # -- parameters and optimizer state --------------------------------------------------------

  def param_shardings(self, params_axes) -> Any:
    """NamedSharding of every parameter, from its logical axis names."""
    from flax.linen import partitioning as nn_partitioning  # pylint: disable=g-import-not-at-top
    from flax.core import unfreeze  # pylint: disable=g-import-not-at-top
    names = unfreeze(nn_partitioning.get_axis_names(params_axes))
    return jax.tree.map(
        lambda spec: NamedSharding(self.mesh, partitioning.to_mesh_axes(tuple(spec), self.rules)),
        names, is_leaf=lambda x: isinstance(x, PartitionSpec))

  def param_shardings_for(self, model) -> Any:
    """Parameter shardings of a `GemmaDecoderOnlyModel` (its `params_axes`, nothing computed)."""
    variables = jax.eval_shape(
        lambda r: model.module.init(r, jax.numpy.ones((1, 1), jax.numpy.int32)),
        jax.random.PRNGKey(0))
    return self.param_shardings(variables["params_axes"])

  def state_shardings(self, tx, params_shape, param_shardings) -> Any:
    """Optimizer state placed like the parameters it mirrors (Adam's mu, nu), counts replicated."""
    import optax  # pylint: disable=g-import-not-at-top
    state_shape = jax.eval_shape(tx.init, params_shape)
    return optax.tree_map_params(tx, lambda _, sharding: sharding, state_shape, param_shardings,
                                 transform_non_params=lambda _: self.replicated)

  def init(self, model, tx, rng, length: int):
    """(params, opt_state, param_shardings, state_shardings), created sharded."""
    def init_variables(r):
      return model.module.init(r, jax.numpy.ones((1, length), jax.numpy.int32))

    variables = jax.eval_shape(init_variables, rng)
    param_sh = self.param_shardings(variables["params_axes"])
    params = jax.jit(lambda r: init_variables(r)["params"], out_shardings=param_sh)(rng)
    state_sh = self.state_shardings(tx, variables["params"], param_sh)
    opt_state = jax.jit(tx.init, out_shardings=state_sh)(params)
    return params, opt_state, param_sh, state_sh

  def place(self, tree, shardings) -> Any:
    """Host arrays (the same full values on every process) -> arrays sharded as `shardings`."""
    def put(x, sharding):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree, shardings)

  # -- batches ---------------------------------------------------------------------------------

  def global_batch(self, local: Mapping[str, np.ndarray]) -> dict:
    """This process's rows of a batch -> global arrays sharded over 'data'.

    With P processes each passes B / P rows; process p's rows are rows [p*B/P, (p+1)*B/P) of
    the global batch.
    """
    out = {}
    for key, value in local.items():
      value = np.asarray(value)
      shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
      out[key] = jax.make_array_from_process_local_data(self.batch_sharding(value.ndim), value,
                                                        shape)
    return out

  def replicate_batch(self, batch: Mapping[str, np.ndarray]) -> dict:
    """A batch every process holds whole (evaluation) -> global arrays sharded over 'data'."""
    return {k: self.place(v, self.batch_sharding(np.ndim(v))) for k, v in batch.items()}

  def to_host(self, array) -> np.ndarray:
    """A global array -> the full numpy value on this process."""
    if getattr(array, "is_fully_addressable", True):
      return np.asarray(array)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def bytes_per_device(*trees) -> dict:
  """{device: bytes of the shards it holds} over the arrays of `trees`."""
  out = {}
  for tree in trees:
    for leaf in jax.tree.leaves(tree):
      for shard in getattr(leaf, "addressable_shards", ()):
        out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out
