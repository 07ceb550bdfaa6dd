"""T5X's `PjitPartitioner` with a ('data', 'model') mesh of `num_partitions` on CPU hosts too.

T5X builds its mesh in `BasePjitPartitioner.mesh`; on CPU it ignores `num_partitions` and puts
every local device on 'model' (`t5x.partitioning.get_cpu_mesh`), so a host with 8 CPU devices
(or `--xla_force_host_platform_device_count=8`) always gets 8-way model parallelism, which a
model with 4 heads cannot take. This subclass overrides only that property: on CPU the mesh is
(devices / num_partitions, num_partitions), devices of one process kept together; on TPU and
GPU it is T5X's `default_mesh`, unchanged.

In a process started with 8 CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`),
`PjitPartitioner(num_partitions=2, logical_axis_rules=logical_axis_rules()).mesh.shape` is

    OrderedDict([('data', 4), ('model', 2)])      # T5X's own CPU mesh: ('data', 1), ('model', 8)

On however many devices this process has:

>>> from model.partitioning import logical_axis_rules
>>> n = jax.device_count()
>>> def mesh_shape(parts):
...   return dict(PjitPartitioner(num_partitions=parts, logical_axis_rules=logical_axis_rules())
...               .mesh.shape)
>>> mesh_shape(1) == {"data": n, "model": 1}, mesh_shape(n) == {"data": 1, "model": n}
(True, True)
>>> mesh_shape(n + 1)
Traceback (most recent call last):
...
ValueError: num_partitions=... does not divide the ... devices
"""
from __future__ import annotations

import functools

import jax
import numpy as np
from t5x import partitioning  # pylint: disable=import-error


class PjitPartitioner(partitioning.PjitPartitioner):
  """`t5x.partitioning.PjitPartitioner` whose CPU mesh honours `num_partitions`."""

  @functools.cached_property
  def mesh(self) -> jax.sharding.Mesh:
    devices = jax.devices(self._backend)
    if (devices[-1].platform != "cpu" or self._model_parallel_submesh
        or self._ici_mesh_shape is not None):
      return partitioning.default_mesh(self._num_partitions, self._model_parallel_submesh,
                                       self._backend, self._ici_mesh_shape, self._dcn_mesh_shape)
    parts = self._num_partitions or 1
    if len(devices) % parts:
      raise ValueError(f"num_partitions={parts} does not divide the {len(devices)} devices")
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    return jax.sharding.Mesh(np.asarray(ordered).reshape(len(devices) // parts, parts),
                             ("data", "model"))
