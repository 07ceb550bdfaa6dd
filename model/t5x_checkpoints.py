"""Orbax checkpoints in T5X's layout, so `t5x.train` / `t5x.eval` can restore what we write.

T5X (`t5x.checkpoints.OrbaxCheckpointManagerInterface`, the default of `t5x.train`) keeps

    <model_dir>/checkpoint_<step>/state/...      the train state: an orbax PyTree (OCDBT)
    <model_dir>/checkpoint_<step>/_CHECKPOINT_METADATA

where the train state is `FlaxOptimTrainState.state_dict()` of an `OptaxWrapper` optimizer:

    {'target': params,                                   # the model parameters
     'state': {'step': int32 scalar,
               'param_states': optax state as a flax state dict, empty nodes removed}}

(`OptaxWrapper.state_dict` drops the empty dicts that `optax.EmptyState` produces; so do we.)

>>> ckpt = T5XCheckpointManager("/tmp/run", keep=2)
>>> ckpt.save(10, params, opt_state)                 # -> /tmp/run/checkpoint_10/state
>>> ckpt.latest_step()
10
>>> params, opt_state, step = ckpt.restore(params_template, opt_state_template)

Writes are atomic: orbax writes into `checkpoint_<step>.orbax-checkpoint-tmp-*` and renames it
when complete, so a crash mid-write never leaves a directory that looks like a checkpoint.
Only the last `keep` checkpoints stay on disk.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Tuple

import numpy as np

CHECKPOINT_PREFIX = "checkpoint"  # t5x.checkpoints_utils.get_checkpoint_prefix()
STATE_KEY = "state"               # t5x.checkpoints._STATE_KEY
_STEP_DIR = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)$")


def state_dict(params, opt_state, step: int) -> dict:
  """T5X's train-state dict of (params, optax state, step).

  >>> import optax, jax.numpy as jnp
  >>> tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  >>> p = {'w': jnp.zeros(2)}
  >>> sd = state_dict(p, tx.init(p), 3)
  >>> sorted(sd), sorted(sd['state']), sorted(sd['state']['param_states']['1']['0'])
  (['state', 'target'], ['param_states', 'step'], ['count', 'mu', 'nu'])
  """
  from flax import serialization, traverse_util  # pylint: disable=g-import-not-at-top
  opt = serialization.to_state_dict(opt_state)
  # Same clean-up as t5x.optimizers.OptaxWrapper.state_dict: no empty nodes.
  opt = traverse_util.unflatten_dict(traverse_util.flatten_dict(opt, sep="/"), sep="/")
  return {
      "target": serialization.to_state_dict(params),
      "state": {"step": np.asarray(step, np.int32), "param_states": opt},
  }


def from_state_dict(params_template, opt_state_template, restored: dict) -> Tuple[Any, Any, int]:
  """Inverse of `state_dict`, filling the empty nodes back from the templates."""
  from flax import serialization, traverse_util  # pylint: disable=g-import-not-at-top
  params = serialization.from_state_dict(params_template, restored["target"])
  step = int(np.asarray(restored["state"]["step"]))
  if opt_state_template is None:
    return params, None, step
  ref = traverse_util.flatten_dict(serialization.to_state_dict(opt_state_template),
                                   keep_empty_nodes=True, sep="/")
  src = dict(traverse_util.flatten_dict(restored["state"].get("param_states", {}), sep="/"))
  for key, value in ref.items():
    if key not in src:
      if value is not traverse_util.empty_node:
        raise ValueError(f"checkpoint has no optimizer state {key!r}; was it written with "
                         "another optimizer?")
      src[key] = value
  opt_state = serialization.from_state_dict(
      opt_state_template, traverse_util.unflatten_dict(src, sep="/"))
  return params, opt_state, step


def all_steps(model_dir: str) -> list:
  """Steps of the complete checkpoints in `model_dir`, ascending (temporary dirs excluded).

  >>> all_steps("/tmp/run")   # has checkpoint_5, checkpoint_10, checkpoint_15.orbax-checkpoint-tmp-1
  [5, 10]
  """
  if not os.path.isdir(model_dir):
    return []
  steps = []
  for name in os.listdir(model_dir):
    m = _STEP_DIR.match(name)
    if m and os.path.isdir(os.path.join(model_dir, name, STATE_KEY)):
      steps.append(int(m.group(1)))
  return sorted(steps)


def latest_step(model_dir: str) -> Optional[int]:
  steps = all_steps(model_dir)
  return steps[-1] if steps else None


def checkpoint_path(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, f"{CHECKPOINT_PREFIX}_{step}")


class T5XCheckpointManager:
  """Saves / restores T5X-layout checkpoints under `model_dir`, keeping the last `keep`.

  Synchronous on purpose: the trainer checks the loss before every save, and a save that
  returns is on disk (the NaN guard relies on that).
  """

  def __init__(self, model_dir: str, keep: Optional[int] = 3):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.model_dir = os.path.abspath(model_dir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, step_prefix=CHECKPOINT_PREFIX, create=True,
        enable_async_checkpointing=False, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.model_dir, options=options,
        item_handlers={STATE_KEY: ocp.PyTreeCheckpointHandler(use_ocdbt=True)})

  def all_steps(self) -> list:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, params, opt_state) -> None:
    """Writes `checkpoint_<step>` (a no-op if that step is already saved)."""
    if step in self._manager.all_steps():
      return
    ocp = self._ocp
    sd = state_dict(params, opt_state, step)
    self._manager.save(step, args=ocp.args.Composite(**{STATE_KEY: ocp.args.PyTreeSave(sd)}),
                       force=True)
    self._manager.wait_until_finished()

  def restore(self, params_template, opt_state_template=None, step: Optional[int] = None):
    """(params, opt_state, step) of `step` (default: the latest). Templates give the structure.

    With `opt_state_template=None` only the parameters are read (evaluation).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint_<step> directory in {self.model_dir}")
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.model_dir}; "
                              f"available: {self.all_steps()}")
    raw = restore_state_dict(checkpoint_path(self.model_dir, step))
    return from_state_dict(params_template, opt_state_template, raw)

  def close(self):
    self._manager.close()


def restore_state_dict(path: str) -> dict:
  """The raw T5X state dict (numpy leaves) of one `checkpoint_<step>` directory.

  >>> sd = restore_state_dict("/tmp/run/checkpoint_10")
  >>> int(sd['state']['step']), sorted(sd['target'])[:2]
  (10, ['embedder', 'final_norm'])
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state_dir = os.path.join(os.path.abspath(path), STATE_KEY)
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(f"{path} is not a T5X orbax checkpoint (no '{STATE_KEY}/' inside)")
  from etils import epath  # pylint: disable=g-import-not-at-top
  with ocp.PyTreeCheckpointer(use_ocdbt=True) as ckptr:
    metadata = ckptr.metadata(epath.Path(state_dir))
    tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata.tree
    # numpy leaves: no device placement, no sharding warnings, works on any host.
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
