"""model.runner.average_checkpoints: the mean of a run's last checkpoints, as a run dir of its own."""
import json

import numpy as np
import pytest


@pytest.fixture(name="run_dir")
def fixture_run_dir(tmp_path):
  """A run dir with checkpoints 10, 20, 30 of a tiny model whose parameters differ per step."""
  import jax
  from model import config
  from model.runner import optim, t5x_checkpoints, train, vocab_record
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  cfg = config.tiny_gemma1()
  base = GemmaDecoderOnlyModel(cfg).get_initial_variables(
      jax.random.PRNGKey(0), {"decoder_input_tokens": (1, 8)})["params"]
  tx = optim.adamw_with_clipping(1e-3, total_steps=100)
  run = tmp_path / "run"
  manager = t5x_checkpoints.T5XCheckpointManager(str(run), keep=None)
  for step in (10, 20, 30):
    params = jax.tree.map(lambda p, s=step: p + s / 10, base)
    state = tx.init(params)
    manager.save(step, params, state)
  manager.close()
  (run / train.MODEL_CONFIG_FILE).write_text(json.dumps(train.config_to_json(cfg)))
  vocab_record.record(str(run), vocab_record.describe("gemma_quiz_qa"))
  return run


def _params(run, step):
  from model.runner import t5x_checkpoints
  return t5x_checkpoints.restore_state_dict(t5x_checkpoints.checkpoint_path(str(run), step))


def test_average_of_the_last_checkpoints_is_a_run_dir_that_evaluate_opens(run_dir, tmp_path):
  import jax
  from model import config
  from model.runner import average_checkpoints, evaluate
  out = tmp_path / "avg"
  assert average_checkpoints.main(["--model_dir", str(run_dir), "--out_dir", str(out),
                                   "--last", "2"]) == 0
  a, b = _params(run_dir, 20), _params(run_dir, 30)
  got = _params(out, 30)
  expected = jax.tree.map(lambda x, y: (x + y) / 2, a["target"], b["target"])
  for want, have in zip(jax.tree.leaves(expected), jax.tree.leaves(got["target"])):
    np.testing.assert_allclose(have, want, rtol=1e-6)
    assert have.dtype == want.dtype
  # The newest checkpoint's optimizer state and step come along (T5X restores them).
  assert int(got["state"]["step"]) == 30
  for want, have in zip(jax.tree.leaves(b["state"]), jax.tree.leaves(got["state"])):
    np.testing.assert_array_equal(have, want)
  assert json.loads((out / "averaged.json").read_text())["steps"] == [20, 30]
  # The evaluator opens it like any run: its config, its vocabulary record, the averaged step.
  model, params, step = evaluate.load_checkpoint(str(out))
  assert step == 30 and model.config == config.tiny_gemma1()
  np.testing.assert_allclose(np.asarray(params["final_norm"]["scale"]),
                             expected["final_norm"]["scale"], rtol=1e-6)
  assert (out / "vocabulary.json").read_text() == (run_dir / "vocabulary.json").read_text()


def test_too_few_checkpoints_or_a_used_out_dir_are_refused(run_dir, tmp_path, capsys):
  from model.runner import average_checkpoints
  assert average_checkpoints.main(["--model_dir", str(run_dir), "--out_dir",
                                   str(tmp_path / "a"), "--last", "4"]) == 2
  assert "has 3 complete checkpoints ([10, 20, 30]), fewer than --last 4" in capsys.readouterr().err
  assert not (tmp_path / "a").exists()
  assert average_checkpoints.main(["--model_dir", str(run_dir), "--out_dir", str(run_dir),
                                   "--last", "2"]) == 2
  assert "already holds checkpoints" in capsys.readouterr().err
