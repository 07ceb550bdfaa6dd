"""Orbax checkpoints in T5X's layout, so `t5x.train` / `t5x.eval` can restore what we write.

T5X (`t5x.checkpoints.OrbaxCheckpointManagerInterface`, the default of `t5x.train`) keeps

    <model_dir>/checkpoint_<step>/state/...      the train state: an orbax PyTree (OCDBT)
    <model_dir>/checkpoint_<step>/_CHECKPOINT_METADATA

where the train state is `FlaxOptimTrainState.state_dict()` of an `OptaxWrapper` optimizer:

    {'target': params,                                   # the model parameters
     'state': {'step': int32 scalar,
               'param_states': optax state as a flax state dict, empty nodes removed}}

(`OptaxWrapper.state_dict` drops the empty dicts that `optax.EmptyState` produces; so do we.)

>>> import tempfile
>>> import jax.numpy as jnp, optax
>>> tx = optax.adam(1e-3)
>>> params = {"w": jnp.arange(4.0)}
>>> model_dir = tempfile.TemporaryDirectory()
>>> ckpt = T5XCheckpointManager(model_dir.name, keep=2)
>>> ckpt.save(10, params, tx.init(params))
>>> sorted(os.listdir(os.path.join(model_dir.name, "checkpoint_10")))
['_CHECKPOINT_METADATA', 'checksums.json', 'commit_success.txt', 'state']
>>> ckpt.latest_step()
10
>>> template = {"w": jnp.zeros(4)}                     # the templates give the structure
>>> restored, opt_state, step = ckpt.restore(template, tx.init(template))
>>> restored["w"].tolist(), int(opt_state[0].count), step
([0.0, 1.0, 2.0, 3.0], 0, 10)
>>> ckpt.close()
>>> model_dir.cleanup()

Writes are atomic: orbax writes into `checkpoint_<step>.orbax-checkpoint-tmp-*` and renames it
when complete, so a crash mid-write never leaves a directory that looks like a checkpoint.
Only the last `keep` checkpoints stay on disk.

Damage after the write is caught too: each save records the SHA-256 of its files in
`checkpoint_<step>/checksums.json` (`model.runner.checkpoint_checksums`; T5X ignores the extra file),
and a restore refuses a checkpoint whose files differ, naming the file. A checkpoint whose
`state/_METADATA` is missing (a copy cut short, files deleted) is incomplete: `all_steps` leaves
it out, so the newest complete checkpoint is the one resumed or evaluated (`newest_complete`
says which was skipped).
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Tuple

import numpy as np

from model.runner import checkpoint_checksums

CHECKPOINT_PREFIX = "checkpoint"  # t5x.checkpoints_utils.get_checkpoint_prefix()
STATE_KEY = "state"               # t5x.checkpoints._STATE_KEY
METADATA_FILE = "_METADATA"       # orbax writes it last into state/: its PyTree structure
INCOMPLETE_PREFIX = "incomplete_"  # incomplete checkpoints set aside by `set_aside` (kept)
_STEP_DIR = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)$")

CorruptCheckpointError = checkpoint_checksums.CorruptCheckpointError


class IncompleteCheckpointError(FileNotFoundError):
  """A checkpoint_<step> directory without a complete `state/` (no `state/_METADATA`)."""


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


def is_complete(step_dir: str) -> bool:
  """Whether `checkpoint_<step>` has its `state/_METADATA` (orbax cannot read the state without)."""
  return os.path.isfile(os.path.join(step_dir, STATE_KEY, METADATA_FILE))


def _step_dirs(model_dir: str) -> dict:
  """{step: path} of every `checkpoint_<step>` directory, complete or not."""
  if not os.path.isdir(model_dir):
    return {}
  out = {}
  for name in os.listdir(model_dir):
    m = _STEP_DIR.match(name)
    if m and os.path.isdir(os.path.join(model_dir, name)):
      out[int(m.group(1))] = os.path.join(model_dir, name)
  return out


def all_steps(model_dir: str) -> list:
  """Steps of the complete checkpoints in `model_dir`, ascending (temporary dirs excluded).

  >>> import tempfile
  >>> model_dir = tempfile.TemporaryDirectory()
  >>> for name in ("checkpoint_5", "checkpoint_10", "checkpoint_15.orbax-checkpoint-tmp-1"):
  ...   os.makedirs(os.path.join(model_dir.name, name, STATE_KEY))
  ...   open(os.path.join(model_dir.name, name, STATE_KEY, METADATA_FILE), "w").close()
  >>> all_steps(model_dir.name)   # the save of step 15 never finished
  [5, 10]
  >>> model_dir.cleanup()
  """
  return sorted(step for step, path in _step_dirs(model_dir).items() if is_complete(path))


def incomplete_steps(model_dir: str) -> list:
  """Steps of `checkpoint_<step>` directories that cannot be restored (no `state/_METADATA`)."""
  return sorted(step for step, path in _step_dirs(model_dir).items() if not is_complete(path))


def latest_step(model_dir: str) -> Optional[int]:
  steps = all_steps(model_dir)
  return steps[-1] if steps else None


def newest_complete(model_dir: str) -> Tuple[Optional[int], str]:
  """(newest complete step or None, a note naming newer incomplete checkpoints, or '').

  >>> import tempfile
  >>> model_dir = tempfile.TemporaryDirectory()
  >>> for step in (5, 10, 15):
  ...   os.makedirs(os.path.join(checkpoint_path(model_dir.name, step), STATE_KEY))
  ...   if step != 15:                               # checkpoint_15/state/_METADATA is gone
  ...     open(os.path.join(checkpoint_path(model_dir.name, step), STATE_KEY, METADATA_FILE),
  ...          "w").close()
  >>> newest_complete(model_dir.name)
  (10, 'checkpoint_15 is incomplete (no state/_METADATA); using checkpoint_10, the newest
  complete checkpoint')
  >>> model_dir.cleanup()
  """
  step = latest_step(model_dir)
  newer = [s for s in incomplete_steps(model_dir) if step is None or s > step]
  if not newer:
    return step, ""
  names = ", ".join(f"{CHECKPOINT_PREFIX}_{s}" for s in newer)
  verb = "is" if len(newer) == 1 else "are"
  using = (f"using {CHECKPOINT_PREFIX}_{step}, the newest complete checkpoint" if step is not None
           else "no complete checkpoint is left")
  return step, f"{names} {verb} incomplete (no {STATE_KEY}/{METADATA_FILE}); {using}"


def set_aside(model_dir: str, step: int) -> str:
  """Renames an incomplete `checkpoint_<step>` to `incomplete_checkpoint_<step>` (kept, not
  deleted: it may hold something worth recovering) so a new save of that step can happen;
  returns the new path. Orbax and T5X only look at names starting with `checkpoint_`."""
  src = checkpoint_path(model_dir, step)
  dst = os.path.join(model_dir, INCOMPLETE_PREFIX + os.path.basename(src))
  n = 1
  while os.path.exists(dst):
    n += 1
    dst = os.path.join(model_dir, f"{INCOMPLETE_PREFIX}{os.path.basename(src)}.{n}")
  os.rename(src, dst)
  return dst


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
    """Complete checkpoints only (orbax's own list also has directories missing their state)."""
    return all_steps(self.model_dir)

  def latest_step(self) -> Optional[int]:
    return latest_step(self.model_dir)

  def save(self, step: int, params, opt_state) -> None:
    """Writes `checkpoint_<step>` and its checksums (a no-op if that step is already saved)."""
    if step in self._manager.all_steps():
      return
    self.save_state_dict(step, state_dict(params, opt_state, step))

  def save_state_dict(self, step: int, sd: dict) -> None:
    """Writes `checkpoint_<step>` from a T5X train-state dict (`state_dict`'s layout, or one
    `restore_state_dict` read) and its checksums."""
    if step in self._manager.all_steps():
      return
    ocp = self._ocp
    self._manager.save(step, args=ocp.args.Composite(**{STATE_KEY: ocp.args.PyTreeSave(sd)}),
                       force=True)
    self._manager.wait_until_finished()
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_index() == 0:   # one writer; the save above has waited for every process
      checkpoint_checksums.write(checkpoint_path(self.model_dir, step))

  def restore(self, params_template, opt_state_template=None, step: Optional[int] = None):
    """(params, opt_state, step) of `step` (default: the latest). Templates give the structure.

    With `opt_state_template=None` only the parameters are read (evaluation).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint_<step> directory in {self.model_dir}")
    if step not in self.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.model_dir}; "
                              f"available: {self.all_steps()}")
    try:
      raw = restore_state_dict(checkpoint_path(self.model_dir, step))
    except CorruptCheckpointError as e:
      earlier = [s for s in self.all_steps() if s < step]
      hint = (f"; move {checkpoint_path(self.model_dir, step)} out of {self.model_dir} to use "
              f"checkpoint_{earlier[-1]} instead" if earlier else "")
      raise CorruptCheckpointError(f"{e}{hint}") from None
    return from_state_dict(params_template, opt_state_template, raw)

  def close(self):
    self._manager.close()


def restore_state_dict(path: str) -> dict:
  """The raw T5X state dict (numpy leaves) of one `checkpoint_<step>` directory, after checking
  that it is complete and that its files match the checksums written with it.

  >>> import tempfile
  >>> import jax.numpy as jnp, optax
  >>> params = {"embedder": {"input_embedding": jnp.ones((8, 2))},
  ...           "final_norm": {"scale": jnp.zeros(2)}}
  >>> model_dir = tempfile.TemporaryDirectory()
  >>> ckpt = T5XCheckpointManager(model_dir.name)
  >>> ckpt.save(10, params, optax.sgd(0.1).init(params))
  >>> sd = restore_state_dict(checkpoint_path(model_dir.name, 10))
  >>> int(sd['state']['step']), sorted(sd['target']), type(sd['target']['final_norm']['scale'])
  (10, ['embedder', 'final_norm'], <class 'numpy.ndarray'>)
  >>> ckpt.close()
  >>> model_dir.cleanup()
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  step_dir = os.path.abspath(path)
  state_dir = os.path.join(step_dir, STATE_KEY)
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(f"{path} is not a T5X orbax checkpoint (no '{STATE_KEY}/' inside)")
  if not is_complete(step_dir):
    raise IncompleteCheckpointError(
        f"{path} is incomplete: {os.path.join(state_dir, METADATA_FILE)} is missing, so its "
        "state cannot be read")
  checkpoint_checksums.verify(step_dir)
  # The item handler, not a Checkpointer: a Checkpointer looks for step metadata
  # (_CHECKPOINT_METADATA) inside state/, where T5X's layout never has it, and warns each time.
  handler = ocp.PyTreeCheckpointHandler(use_ocdbt=True)
  try:
    metadata = handler.metadata(epath.Path(state_dir))
    tree = metadata.tree if hasattr(metadata, "tree") else metadata
    # numpy leaves: no device placement, no sharding warnings, works on any host.
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return handler.restore(epath.Path(state_dir),
                           args=ocp.args.PyTreeRestore(restore_args=restore_args))
  finally:
    handler.close()
