"""model.runner.t5x_checkpoints: checksums verified on restore, no orbax step-metadata warning."""
import os

import pytest


def _small_checkpoints(model_dir, steps=(1, 2)):
  import jax.numpy as jnp
  import optax
  from model.runner import t5x_checkpoints
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  tx = optax.adam(1e-3)
  mgr = t5x_checkpoints.T5XCheckpointManager(str(model_dir), keep=None)
  for s in steps:
    mgr.save(s, params, tx.init(params))
  mgr.close()
  return params, tx


def test_bit_flipped_checkpoint_file_is_refused_naming_the_file(tmp_path, flip_a_bit):
  from model.runner import t5x_checkpoints
  params, tx = _small_checkpoints(tmp_path)
  # The extra file sits next to state/: what T5X reads is unchanged.
  assert sorted(os.listdir(tmp_path / "checkpoint_2")) == [
      "_CHECKPOINT_METADATA", "checksums.json", "commit_success.txt", "state"]
  victim = flip_a_bit(tmp_path / "checkpoint_2")
  with pytest.raises(t5x_checkpoints.CorruptCheckpointError, match=rf"{victim} differs"):
    t5x_checkpoints.restore_state_dict(str(tmp_path / "checkpoint_2"))
  mgr = t5x_checkpoints.T5XCheckpointManager(str(tmp_path), keep=None)
  with pytest.raises(t5x_checkpoints.CorruptCheckpointError,
                     match=r"differs .* to use checkpoint_1 instead"):
    mgr.restore(params, tx.init(params))
  mgr.close()
  # The undamaged one still restores.
  assert int(t5x_checkpoints.restore_state_dict(str(tmp_path / "checkpoint_1"))
             ["state"]["step"]) == 1


def test_restore_does_not_warn_about_missing_step_metadata(tmp_path, caplog):
  from model.runner import t5x_checkpoints
  _small_checkpoints(tmp_path, steps=(1,))
  caplog.set_level("INFO")
  t5x_checkpoints.restore_state_dict(str(tmp_path / "checkpoint_1"))
  assert "Metadata file does not exist" not in caplog.text


def test_incomplete_checkpoint_is_named_and_skipped(tmp_path):
  from model.runner import t5x_checkpoints
  _small_checkpoints(tmp_path)
  (tmp_path / "checkpoint_2" / "state" / "_METADATA").unlink()
  with pytest.raises(t5x_checkpoints.IncompleteCheckpointError,
                     match=r"checkpoint_2 is incomplete: .*state/_METADATA is missing"):
    t5x_checkpoints.restore_state_dict(str(tmp_path / "checkpoint_2"))
  assert t5x_checkpoints.all_steps(str(tmp_path)) == [1]
  assert t5x_checkpoints.incomplete_steps(str(tmp_path)) == [2]
  assert t5x_checkpoints.newest_complete(str(tmp_path)) == (
      1, "checkpoint_2 is incomplete (no state/_METADATA); using checkpoint_1, the newest "
         "complete checkpoint")


def test_checkpoint_without_checksums_restores_as_before(tmp_path):
  """Checkpoints written by T5X (or before checksums existed) have no checksums.json."""
  from model.runner import checkpoint_checksums, t5x_checkpoints
  _small_checkpoints(tmp_path, steps=(1,))
  (tmp_path / "checkpoint_1" / "checksums.json").unlink()
  assert not checkpoint_checksums.verify(str(tmp_path / "checkpoint_1"))
  sd = t5x_checkpoints.restore_state_dict(str(tmp_path / "checkpoint_1"))
  assert sd["target"]["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
