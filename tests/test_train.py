"""model.runner.train: few-step runs, T5X-layout checkpoints, exact resume, NaN stop, outputs, CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny model on the smallest embedded task: a step is milliseconds once compiled.
TINY = dict(task="gemma_quiz_qa", preset="tiny_gemma1", inputs_length=32, targets_length=16,
            batch_size=4, learning_rate=3e-3, warmup_steps=2, log_every=1, progress=False,
            shuffle_buffer_size=256, packing="best_fit")


def _args(model_dir, **kw):
  from model.runner import train
  return train.TrainArgs(model_dir=str(model_dir), **{**TINY, **kw})


def _params(model_dir, step=None):
  from model.runner import t5x_checkpoints
  step = step or t5x_checkpoints.latest_step(str(model_dir))
  return t5x_checkpoints.restore_state_dict(t5x_checkpoints.checkpoint_path(str(model_dir), step))


def _flat(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}/{k}"))
    return out
  return {prefix: np.asarray(tree)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """6 steps in one go, checkpoints every 3 steps."""
  from model.runner import train
  d = tmp_path_factory.mktemp("straight")
  result = train.train(_args(d, train_steps=6, save_every=3))
  return d, result


def test_run_writes_t5x_layout_and_outputs(uninterrupted):
  d, result = uninterrupted
  assert result.step == 6 and not result.stopped_early
  assert "state" in os.listdir(d / "checkpoint_6")
  sd = _params(d)
  # T5X's FlaxOptimTrainState.state_dict() of an OptaxWrapper optimizer.
  assert set(sd) == {"target", "state"}
  assert set(sd["state"]) == {"step", "param_states"}
  assert int(sd["state"]["step"]) == 6
  assert "embedder" in sd["target"] and "layer_0" in sd["target"]
  adam = sd["state"]["param_states"]["1"]["0"]   # chain(clip, adamw) -> adam's count/mu/nu
  assert int(adam["count"]) == 6
  embedding = sd["target"]["embedder"]["input_embedding"]
  assert adam["mu"]["embedder"]["input_embedding"].shape == embedding.shape
  # Self-describing directory, curves and TensorBoard.
  cfg = json.loads((d / "model_config.json").read_text())
  assert cfg["num_layers"] == 2 and cfg["vocab_size"] == 4096
  rows = [json.loads(l) for l in (d / "train_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r["loss"]) and r["tokens_per_second"] > 0 for r in rows)
  assert (d / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(d / "train"))


def test_loss_goes_down_on_repeated_data(tmp_path):
  """Sanity of the whole loop: a few dozen steps lower the loss clearly."""
  from model.runner import train
  train.train(_args(tmp_path, train_steps=40, save_every=40, learning_rate=1e-2, log_every=1))
  lines = (tmp_path / "train_metrics.jsonl").read_text().splitlines()
  losses = [json.loads(l)["loss"] for l in lines]
  assert np.mean(losses[-5:]) < losses[0] - 2.0


def test_resumed_fitted_run_continues_to_its_recorded_length(tmp_path):
  """A run re-sized by --fit_schedule_to_budget records its length in schedule.json; resuming
  with the first estimate as --train_steps continues to the recorded length and schedule."""
  from model.runner import optim, train
  train.train(_args(tmp_path, train_steps=6, save_every=3))
  (tmp_path / "schedule.json").write_text(json.dumps({"train_steps": 9, "resized_at": [4, 0.5]}))
  result = train.train(_args(tmp_path, train_steps=6, save_every=3))
  assert result.step == 9 and not result.stopped_early
  rows = [json.loads(l) for l in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  expected = optim.schedule(3e-3, total_steps=9, warmup_steps=2, resized_at=(4, 0.5))
  assert [r["step"] for r in rows[-3:]] == [7, 8, 9]
  np.testing.assert_allclose([r["learning_rate"] for r in rows[-3:]],
                             [float(expected(s)) for s in (6, 7, 8)], rtol=1e-6)


def test_a_resized_schedule_trains_as_planned_without_compiling_the_step_again():
  """The trainer hands the schedule's length to its compiled step as values: a re-sized run
  takes the same updates as a step built for that length from the start, from one trace."""
  import jax
  from model.config import tiny_gemma1
  from model.runner import optim
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  from model.runner.train_step import make_train_step
  model = GemmaDecoderOnlyModel(tiny_gemma1())
  params = model.get_initial_variables(jax.random.PRNGKey(0),
                                       {"decoder_input_tokens": (2, 8)})["params"]
  tokens = np.random.default_rng(0).integers(4, 4000, (2, 8)).astype(np.int32)
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
           "decoder_loss_weights": np.ones((2, 8), np.float32)}
  traces = []

  def tx_of(hyper):
    traces.append(hyper)
    return optim.adamw_with_clipping(1e-2, total_steps=hyper["total"], warmup_steps=1,
                                     resized_at=(hyper["at"], hyper["progress"]))

  def run(step_fn, hypers):
    p, state = params, optim.adamw_with_clipping(1e-2, total_steps=1).init(params)
    for i, hyper in enumerate(hypers):
      p, state, _ = step_fn(p, state, batch, i, None, *hyper)
    return p

  resizable = make_train_step(model, tx_of, donate=False)
  # 4 planned steps, re-sized to 40 after 2 (half the cosine done then: progress 1/3).
  short = {"total": np.int32(4), "at": np.int32(1), "progress": np.float32(0)}
  long = {"total": np.int32(40), "at": np.int32(2), "progress": np.float32(1 / 3)}
  got = run(resizable, [(short,), (short,), (long,), (long,)])
  assert len(traces) == 1     # one compilation for both lengths
  planned = make_train_step(model, optim.adamw_with_clipping(
      1e-2, total_steps=40, warmup_steps=1, resized_at=(2, 1 / 3)), donate=False)
  first = make_train_step(model, optim.adamw_with_clipping(1e-2, total_steps=4, warmup_steps=1),
                          donate=False)
  p, state = params, optim.adamw_with_clipping(1e-2, total_steps=1).init(params)
  for i, step_fn in enumerate((first, first, planned, planned)):
    p, state, _ = step_fn(p, state, batch, i, None)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # and the length matters: the same steps without the re-sizing end elsewhere
  unsized = run(resizable, [(short,)] * 4)
  assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(unsized))) > 1e-4


@pytest.mark.slow  # a 36-second time budget
def test_schedule_fitted_to_the_time_budget_ends_decayed(tmp_path):
  """A first guess of 100,000 steps is re-sized from the measured step time: the run ends when
  the time is up with its learning rate decayed, continuously, and says so in schedule.json."""
  from model.runner import train
  result = train.train(_args(tmp_path, train_steps=100_000, save_every=10_000, log_every=5,
                             learning_rate=1e-3, end_lr_factor=0.1, time_budget_minutes=0.6,
                             fit_schedule_to_budget=True))
  schedule = json.loads((tmp_path / "schedule.json").read_text())
  assert 100 < schedule["train_steps"] < 100_000
  assert result.step >= 0.8 * schedule["train_steps"]
  rows = [json.loads(l) for l in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  lrs = [r["learning_rate"] for r in rows]
  assert lrs[-1] < 0.25e-3, lrs[-5:]                  # decayed (unfitted: still ~1e-3)
  assert max(lrs) > 0.9e-3                            # after reaching the peak
  steps = np.diff([r["step"] for r in rows])
  jumps = np.abs(np.diff(lrs)) / np.maximum(steps, 1)
  assert jumps.max() < 0.01e-3, (jumps.argmax(), lrs[max(jumps.argmax() - 3, 0):jumps.argmax() + 3])


@pytest.mark.slow  # several training runs and an evaluation
def test_stopped_and_resumed_run_equals_uninterrupted_run(uninterrupted, tmp_path):
  from model.runner import train
  straight_dir, _ = uninterrupted
  first = train.train(_args(tmp_path, train_steps=6, save_every=3, max_steps_per_run=2))
  assert first.step == 2 and first.stopped_early
  second = train.train(_args(tmp_path, train_steps=6, save_every=3, max_steps_per_run=2))
  assert second.step == 4
  third = train.train(_args(tmp_path, train_steps=6, save_every=3))
  assert third.step == 6
  a, b = _flat(_params(straight_dir)), _flat(_params(tmp_path))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # The resumed run's log has each step once, as if it had never stopped.
  rows = [json.loads(l) for l in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_resume_with_other_data_settings_is_refused(uninterrupted, tmp_path):
  from model.runner import train
  train.train(_args(tmp_path, train_steps=4, save_every=2, max_steps_per_run=2))
  with pytest.raises(ValueError, match="seed: checkpoint 0 vs now 1"):
    train.train(_args(tmp_path, train_steps=4, save_every=2, seed=1))


def test_keeps_last_k_and_ignores_temporary_dirs(tmp_path):
  from model.runner import t5x_checkpoints, train
  train.train(_args(tmp_path, train_steps=6, save_every=1, keep=2))
  assert t5x_checkpoints.all_steps(str(tmp_path)) == [5, 6]
  # An interrupted orbax write leaves only a temporary directory: never a checkpoint.
  (tmp_path / "checkpoint_7.orbax-checkpoint-tmp-1700000000").mkdir()
  (tmp_path / "checkpoint_8").mkdir()   # no state/ inside: incomplete
  assert t5x_checkpoints.all_steps(str(tmp_path)) == [5, 6]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  """A learning rate of 1e30 blows the parameters up on the first update; the second step's
  gradient is NaN. The run stops with a clear error and checkpoint_1 is still the latest."""
  cmd = [sys.executable, "-m", "model.runner.train", "--task", "gemma_quiz_qa", "--model_dir",
         str(tmp_path), "--preset", "tiny_gemma1", "--inputs_length", "32", "--targets_length",
         "16", "--batch_size", "4", "--train_steps", "10", "--learning_rate", "1e30",
         "--shuffle_buffer_size", "256",
         "--warmup_steps", "0", "--clip_norm", "1e30", "--save_every", "1", "--no_progress"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "at step 2; stopped without saving" in proc.stderr
  assert f"the last good checkpoint is {tmp_path}/checkpoint_1" in proc.stderr
  from model.runner import t5x_checkpoints
  assert t5x_checkpoints.all_steps(str(tmp_path)) == [1]
  sd = _params(tmp_path, 1)
  assert all(np.all(np.isfinite(v)) for v in _flat(sd["target"]).values())


def test_nan_in_python_api_raises_training_diverged(tmp_path):
  from model.runner import train
  with pytest.raises(train.TrainingDiverged, match="no checkpoint was written yet"):
    train.train(_args(tmp_path, train_steps=5, save_every=5, learning_rate=1e30,
                      warmup_steps=0, clip_norm=1e30))


def test_bad_arguments_name_the_problem(tmp_path):
  from model.runner import train
  with pytest.raises(ValueError, match="No Task or Mixture named 'gemma_quiz_qaa'"):
    train.train(_args(tmp_path, task="gemma_quiz_qaa", train_steps=1))
  with pytest.raises(ValueError, match="unknown GemmaConfig field"):
    train.build_model_config(_args(tmp_path, model_overrides={"n_layers": "3"}))
  with pytest.raises(ValueError, match="vocab_size=100"):
    train.train(_args(tmp_path, model_overrides={"vocab_size": "100"}, train_steps=1))


def test_model_override_and_dtype(tmp_path):
  from model.runner import train
  cfg = train.build_model_config(_args(tmp_path, model_overrides={"num_layers": "3",
                                                                  "dropout_rate": "0.1"},
                                       dtype="bfloat16"))
  assert (cfg.num_layers, cfg.dropout_rate, cfg.dtype) == (3, 0.1, "bfloat16")
  assert train.config_from_json(train.config_to_json(cfg)) == cfg


def test_init_from_hf_starts_from_those_weights(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  hf_cfg = transformers.GemmaConfig(
      vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, head_dim=16)
  torch.manual_seed(0)
  hf = transformers.GemmaForCausalLM(hf_cfg)
  hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
  from model.runner import train
  from model.checkpoints import load_hf_checkpoint
  _, hf_params = load_hf_checkpoint(str(tmp_path / "hf"))
  train.train(_args(tmp_path / "run", init_from_hf=str(tmp_path / "hf"), train_steps=1,
                    learning_rate=1e-9, warmup_steps=0))
  sd = _params(tmp_path / "run")
  cfg = json.loads((tmp_path / "run" / "model_config.json").read_text())
  assert cfg["embed_dim"] == 32 and cfg["num_layers"] == 1
  np.testing.assert_allclose(sd["target"]["embedder"]["input_embedding"],
                             hf_params["embedder"]["input_embedding"], atol=1e-6)


@pytest.mark.parametrize("module", ["model.runner.train", "model.runner.evaluate", "demo.run"])
def test_cli_help(module):
  proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "usage:" in proc.stdout and "--" in proc.stdout
