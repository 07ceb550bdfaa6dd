"""The gin files under the real T5X: `t5x.train`, `t5x.eval` and `t5x.infer`, as a user runs them.

Every test here runs the T5X library itself (installed by `make test-t5x` from the wheels in
../shared/t5x); where T5X is not installed they are skipped with the reason. Each T5X command
is the one at the top of its gin file, with paths, steps, batch and eval sizes set on the command
line; where a test needs more (per-step statistics, a fixed data seed) it says why.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from t5x_support import CONFIGS, REPO, T5X_ROOT, needs_t5x

pytestmark = [pytest.mark.t5x, needs_t5x]

TASK = "gemma_en_de_libreoffice"
LENGTHS = {"inputs": 96, "targets": 96}     # gemma_en_de_libreoffice_finetune.gin


# -- running things ------------------------------------------------------------------------------

def _env(devices=None, **extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.update(extra)
  return env


def run(args, log_path, env=None):
  """Runs a command from the repo root; on failure the error names the log's last lines."""
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.run(args, cwd=REPO, env=env or _env(), stdout=log, stderr=subprocess.STDOUT,
                          check=False)
  if proc.returncode:
    with open(log_path, encoding="utf-8") as f:
      tail = "".join(f.readlines()[-40:])
    raise AssertionError(f"{' '.join(args[:3])} failed (rc {proc.returncode}); log {log_path}:\n"
                         f"{tail}")


def t5x_cmd(module, gin_file, **gin):
  """`python -m t5x.<module>` with our gin file and `--gin.NAME=value` bindings."""
  cmd = [sys.executable, "-m", f"t5x.{module}", f"--gin_search_paths={REPO},{T5X_ROOT}",
         f"--gin_file={os.path.join(CONFIGS, gin_file)}"]
  return cmd + [f"--gin.{k}={v}" for k, v in gin.items()]


def q(path):
  """A gin string literal."""
  return repr(str(path))


def tb_scalars(log_dir):
  """{tag: {step: value}} of every scalar summary under `log_dir` (T5X writes tensors)."""
  from tensorboard.backend.event_processing import event_accumulator  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415
  out = {}
  for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
      for ev in acc.Tensors(tag):
        value = tf.make_ndarray(ev.tensor_proto)
        if value.dtype.kind == "f" and value.size == 1:
          out.setdefault(tag, {})[ev.step] = float(value)
  return out


def flat_state(path):
  from flax import traverse_util  # noqa: PLC0415
  from model.runner import t5x_checkpoints  # noqa: PLC0415
  return traverse_util.flatten_dict(t5x_checkpoints.restore_state_dict(path), sep="/")


def train_ours(model_dir, **overrides):
  """`model.runner.train` of the recipe's model shape in float32 (the gin files' dtype)."""
  sys.path.insert(0, REPO)
  from demo import run as demo_run  # noqa: PLC0415
  from model.runner import train  # noqa: PLC0415
  kw = dict(task=TASK, model_dir=str(model_dir), inputs_length=LENGTHS["inputs"],
            targets_length=LENGTHS["targets"], batch_size=4, progress=False, dtype="float32",
            preset=demo_run.RECIPE_PRESET)
  kw.update(overrides)
  return train.train(train.TrainArgs(**kw))


def our_losses(model_dir):
  with open(os.path.join(model_dir, "train_metrics.jsonl"), encoding="utf-8") as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f)}


def evaluate_ours(checkpoint, out_dir, **kw):
  from model.runner import evaluate  # noqa: PLC0415
  args = evaluate.EvalArgs(checkpoint_dir=str(checkpoint), task=TASK, output_dir=str(out_dir),
                           progress=False, **kw)
  return evaluate.evaluate(args)["tasks"][TASK]["metrics"]


def t5x_eval_metrics(out_dir, task=TASK):
  """The metrics `seqio.Evaluator` logged (our JSON logger) under a T5X output dir."""
  rows = []
  for path in glob.glob(os.path.join(out_dir, "**", f"{task}-metrics.jsonl"), recursive=True):
    with open(path, encoding="utf-8") as f:
      rows += [json.loads(line) for line in f]
  assert rows, f"no {task}-metrics.jsonl under {out_dir}"
  return rows


# -- a model.runner.train run that T5X continues --------------------------------------------------------

@pytest.fixture(scope="module")
def ours(tmp_path_factory):
  """A `model.runner.train` run of 4 steps: what a user hands to T5X."""
  root = tmp_path_factory.mktemp("ours")
  train_ours(root, train_steps=4, save_every=4)
  return root


@pytest.fixture(scope="module")
def t5x_continued(ours, tmp_path_factory):
  """`t5x.train` continuing it, as gemma_en_de_libreoffice_finetune.gin says."""
  root = tmp_path_factory.mktemp("t5x_train")
  run(t5x_cmd("train", "gemma_en_de_libreoffice_finetune.gin",
              MODEL_DIR=q(root / "model"), INITIAL_CHECKPOINT_PATH=q(ours / "checkpoint_4"),
              TRAIN_STEPS=8, BATCH_SIZE=4, EVAL_STEPS=2, EVALUATOR_NUM_EXAMPLES=8),
      str(root / "train.log"))
  return root / "model"


def test_t5x_train_restores_a_model_train_checkpoint_leaf_for_leaf(ours, t5x_continued):
  """T5X's first saved checkpoint (before its loop) is ours: parameters and optimizer state."""
  theirs = flat_state(t5x_continued / "checkpoint_4")
  mine = flat_state(ours / "checkpoint_4")
  assert set(theirs) == set(mine)
  assert any(k.startswith("state/param_states/") for k in mine)
  for key, value in mine.items():
    np.testing.assert_array_equal(theirs[key], value, err_msg=key)
  after = flat_state(t5x_continued / "checkpoint_8")
  assert int(after["state/step"]) == 8
  assert not np.array_equal(after["target/embedder/input_embedding"],
                            mine["target/embedder/input_embedding"])


def test_t5x_train_logs_clu_metrics_the_schedule_and_runs_the_evaluator(t5x_continued):
  from model.runner import optim  # noqa: PLC0415
  scalars = tb_scalars(t5x_continued / "train")
  for name in ("loss", "cross_ent_loss", "accuracy", "weight_sum", "num_examples",
               "timing/seqs_per_second"):
    assert name in scalars, name
  assert np.isfinite(scalars["loss"][8]) and 0 < scalars["accuracy"][8] < 1
  # The learning rate T5X logs is model.runner.optim's schedule (gin: 3e-3, warmup 100, end 0.1,
  # TRAIN_STEPS 8 => warmup capped at 7 steps), not finetune.gin's constant 1e-3.
  lr = optim.schedule(3e-3, total_steps=8, warmup_steps=100, end_factor=0.1)
  np.testing.assert_allclose(scalars["learning_rate/current"][8], float(lr(7)), rtol=1e-6)
  # The in-training inference evaluation went through seqio.Evaluator (BLEU on validation).
  rows = t5x_eval_metrics(t5x_continued / "inference_eval")
  assert rows[-1]["step"] == 8 and "bleu" in rows[-1]


@pytest.mark.parametrize("gin_file,task,metric", [
    ("gemma_en_de_libreoffice_eval.gin", TASK, "bleu"),
    ("gemma_trivia_qa_open_eval.gin", "gemma_trivia_qa_open", "exact_match")])
def test_t5x_eval_writes_the_task_metrics(ours, tmp_path, gin_file, task, metric):
  run(t5x_cmd("eval", gin_file, CHECKPOINT_PATH=q(ours / "checkpoint_4"),
              EVAL_OUTPUT_DIR=q(tmp_path / "eval"), **{"utils.DatasetConfig.batch_size": 8,
                                                       "seqio.Evaluator.num_examples": 16}),
      str(tmp_path / "eval.log"))
  rows = t5x_eval_metrics(tmp_path / "eval", task)
  assert rows[-1]["step"] == 4 and 0 <= rows[-1][metric] <= 100


def test_t5x_infer_writes_predictions(ours, tmp_path):
  run(t5x_cmd("infer", "gemma_en_de_libreoffice_infer.gin",
              CHECKPOINT_PATH=q(ours / "checkpoint_4"), INFER_OUTPUT_DIR=q(tmp_path / "infer"),
              **{"utils.DatasetConfig.batch_size": 8, "infer.num_shards": 100}),
      str(tmp_path / "infer.log"))
  files = glob.glob(str(tmp_path / "infer" / f"{TASK}-predict.jsonl-00000-of-00100"))
  assert files, os.listdir(tmp_path / "infer")
  with open(files[0], encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert 10 <= len(rows) <= 20            # 1,679 test pairs / 100 shards
  assert all("prediction" in r and "Translate" in r["inputs"]["inputs_pretokenized"]
             for r in rows)


# -- the same model trained by both ----------------------------------------------------------------

STEPS = 100
WARMUP = 20


@pytest.fixture(scope="module")
def same_start(tmp_path_factory):
  """Both trainers from the same initial checkpoint and the same batches for 100 steps.

  Ours: no extra example shuffle (`shuffle_buffer_size=0`), seqio's in-order packing, logits at
  every position (what T5X's loss_fn computes). T5X: the same data seed as ours (finetune.gin
  draws a new one per run), statistics every step, no in-training evaluation.
  """
  import jax  # noqa: PLC0415
  from model.runner import optim, t5x_checkpoints, train  # noqa: PLC0415
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # noqa: PLC0415
  root = tmp_path_factory.mktemp("parity")
  settings = dict(train_steps=STEPS, warmup_steps=WARMUP, learning_rate=3e-3, end_lr_factor=0.1,
                  weight_decay=0.01, b2=0.98, clip_norm=1.0, shuffle_buffer_size=0,
                  packing="in_order", loss_positions_bucket=0, seed=0, log_every=1,
                  save_every=STEPS)
  train_ours(root / "ours", **settings)
  # model.runner.train's initial parameters (seed 0) and a fresh optimizer state, as checkpoint_0.
  cfg = train.load_model_config(str(root / "ours"))
  init_rng, _ = jax.random.split(jax.random.PRNGKey(0))
  params = GemmaDecoderOnlyModel(cfg).get_initial_variables(
      init_rng, {"decoder_input_tokens": (1, sum(LENGTHS.values()))})["params"]
  manager = t5x_checkpoints.T5XCheckpointManager(str(root / "init"))
  manager.save(0, params, optim.adamw_with_clipping(total_steps=STEPS).init(params))
  manager.close()
  run(t5x_cmd("train", "gemma_en_de_libreoffice_finetune.gin",
              MODEL_DIR=q(root / "t5x"), INITIAL_CHECKPOINT_PATH=q(root / "init" / "checkpoint_0"),
              TRAIN_STEPS=STEPS, BATCH_SIZE=4, WARMUP_STEPS=WARMUP,
              **{"train/utils.DatasetConfig.seed": 0, "train.stats_period": 1,
                 "train.train_eval_dataset_cfg": None, "train.infer_eval_dataset_cfg": None}),
      str(root / "t5x.log"))
  return root


def test_t5x_and_model_train_give_the_same_100_losses(same_start):
  from model.runner import optim  # noqa: PLC0415
  ours = our_losses(same_start / "ours")
  scalars = tb_scalars(same_start / "t5x" / "train")
  theirs = scalars["loss"]
  steps = range(1, STEPS + 1)
  assert all(s in theirs for s in steps), sorted(theirs)[:5]
  np.testing.assert_allclose([theirs[s] for s in steps], [ours[s] for s in steps], rtol=1e-4)
  assert ours[STEPS] < ours[1] - 1.0   # it learned: the comparison is not of two flat lines
  # Warmup, peak and end of the logged rate = model.runner.optim's schedule.
  lr = optim.schedule(3e-3, total_steps=STEPS, warmup_steps=WARMUP, end_factor=0.1)
  for step in (5, WARMUP + 1, STEPS):
    np.testing.assert_allclose(scalars["learning_rate/current"][step], float(lr(step - 1)),
                               rtol=1e-5)


def longest_target(num_examples):
  """Target tokens of the longest of the first test examples: `model.runner.evaluate`'s decode budget."""
  import seqio  # noqa: PLC0415
  import gemma_tasks  # noqa: F401,PLC0415
  ds = seqio.get_mixture_or_task(TASK).get_dataset(LENGTHS, split="test", shuffle=False)
  return max(min(len(ex["targets"]), LENGTHS["targets"])
             for ex in ds.take(num_examples).as_numpy_iterator())


def test_both_ways_same_bleu_on_the_same_examples(same_start, tmp_path):
  """A T5X-trained checkpoint scored by model.runner.evaluate, ours by t5x.eval: equal BLEU.

  Same examples, same greedy decoding and the same budget of new tokens: T5X's decoder-only
  inference leaves room for L - P tokens (the rest of the row), `model.runner.evaluate` for as many as
  the longest target, so t5x.eval gets that budget as the model's `max_new_tokens`.
  """
  lengths = dict(inputs_length=96, targets_length=96)
  budget = longest_target(32)
  for name, checkpoint in (("t5x", same_start / "t5x" / f"checkpoint_{STEPS}"),
                           ("ours", same_start / "ours" / f"checkpoint_{STEPS}")):
    mine = evaluate_ours(checkpoint, tmp_path / f"{name}_ours", batch_size=16, num_examples=32,
                         **lengths)
    run(t5x_cmd("eval", "gemma_en_de_libreoffice_eval.gin", CHECKPOINT_PATH=q(checkpoint),
                EVAL_OUTPUT_DIR=q(tmp_path / f"{name}_t5x"),
                TASK_FEATURE_LENGTHS=repr(LENGTHS),
                **{"utils.DatasetConfig.batch_size": 16, "seqio.Evaluator.num_examples": 32,
                   "t5x_model.GemmaDecoderOnlyModel.max_new_tokens": budget}),
        str(tmp_path / f"{name}_t5x.log"))
    theirs = t5x_eval_metrics(tmp_path / f"{name}_t5x")[-1]
    assert theirs["step"] == STEPS
    np.testing.assert_allclose(theirs["bleu"], mine["bleu"], rtol=1e-6, err_msg=name)


# -- partitioned ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def partitioned_runs(ours, tmp_path_factory):
  """t5x.train on 8 simulated CPU devices with 1, 2 and 4 model partitions (NUM_PARTITIONS:
  `partitioning.PjitPartitioner.num_partitions` of our partitioner, which T5X's CPU mesh
  would ignore)."""
  root = tmp_path_factory.mktemp("partitions")
  for parts in (1, 2, 4):
    run(t5x_cmd("train", "gemma_en_de_libreoffice_finetune.gin",
                MODEL_DIR=q(root / f"p{parts}"), INITIAL_CHECKPOINT_PATH=q(ours / "checkpoint_4"),
                TRAIN_STEPS=14, BATCH_SIZE=8,
                NUM_PARTITIONS=parts,
                **{"train/utils.DatasetConfig.seed": 0, "train.stats_period": 1,
                   "train.train_eval_dataset_cfg": None, "train.infer_eval_dataset_cfg": None}),
        str(root / f"p{parts}.log"), env=_env(devices=8))
  return root


def test_t5x_train_with_1_2_4_partitions_gives_the_same_losses(partitioned_runs):
  losses = {p: tb_scalars(partitioned_runs / f"p{p}" / "train")["loss"] for p in (1, 2, 4)}
  steps = range(5, 15)                      # the first 10 steps after checkpoint_4
  for p in (2, 4):
    np.testing.assert_allclose([losses[p][s] for s in steps], [losses[1][s] for s in steps],
                               rtol=1e-5, err_msg=f"{p} partitions")
  # T5X's own account of the layout: the embedding split over 'model', the norms replicated.
  info = (partitioned_runs / "p4" / "model-info.txt").read_text().splitlines()
  embedding = [line for line in info if "embedder/input_embedding" in line]
  assert embedding and all("('model', None)" in line for line in embedding), embedding


def test_our_partitioner_honours_num_partitions_on_cpu(tmp_path):
  """T5X's CPU mesh puts every device on 'model'; ours is (devices / n, n), as on TPU/GPU."""
  code = ("from model import partitioning\nfrom model.runner import t5x_partitioner\n"
          "for n in (1, 2, 4, 8):\n"
          "  p = t5x_partitioner.PjitPartitioner(num_partitions=n,\n"
          "      logical_axis_rules=partitioning.logical_axis_rules())\n"
          "  print(n, dict(p.mesh.shape))\n")
  run([sys.executable, "-c", code], str(tmp_path / "mesh.log"), env=_env(devices=8))
  lines = (tmp_path / "mesh.log").read_text()
  for n in (1, 2, 4, 8):
    assert f"{n} {{'data': {8 // n}, 'model': {n}}}" in lines, lines


def test_a_sharded_checkpoint_restores_in_model_evaluate_on_one_device(partitioned_runs,
                                                                       tmp_path):
  checkpoint = partitioned_runs / "p4" / "checkpoint_14"
  metrics = evaluate_ours(checkpoint, tmp_path / "eval", batch_size=8, num_examples=8,
                          inputs_length=96, targets_length=96)
  assert 0 <= metrics["bleu"] <= 100
  one = flat_state(checkpoint)
  assert one["target/embedder/input_embedding"].shape == (4096, 128)


def test_a_checkpoint_of_our_sharded_trainer_restores_in_t5x_eval(tmp_path):
  """`model.runner.train` on a (4, 2) mesh with FSDP writes each shard; t5x.eval restores it."""
  sys.path.insert(0, REPO)
  from demo import run as demo_run  # noqa: PLC0415
  run([sys.executable, "-m", "model.runner.train", "--task", TASK, "--model_dir", str(tmp_path / "ours"),
       "--preset", demo_run.RECIPE_PRESET, "--inputs_length", "96",
       "--targets_length", "96", "--batch_size", "8", "--train_steps", "2", "--save_every", "2",
       "--mesh", "data=4,model=2", "--fsdp", "--no_progress"],
      str(tmp_path / "train.log"), env=_env(devices=8))
  run(t5x_cmd("eval", "gemma_en_de_libreoffice_eval.gin",
              CHECKPOINT_PATH=q(tmp_path / "ours" / "checkpoint_2"),
              EVAL_OUTPUT_DIR=q(tmp_path / "eval"),
              **{"utils.DatasetConfig.batch_size": 8, "seqio.Evaluator.num_examples": 8}),
      str(tmp_path / "eval.log"))
  rows = t5x_eval_metrics(tmp_path / "eval")
  assert rows[-1]["step"] == 2 and 0 <= rows[-1]["bleu"] <= 100


# -- a real Gemma's gin file -----------------------------------------------------------------------

def test_gemma2_2b_gin_fine_tunes_an_imported_hf_checkpoint(tmp_path):
  """gemma2_2b_finetune.gin / _eval.gin with the sizes overridden small: a random Gemma 2 saved
  by `transformers`, converted by `model.runner.import_hf`, fine-tuned by t5x.train on 8 simulated
  devices (the file's 2 x 4 mesh, FSDP), then scored by t5x.eval."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from gemma_tasks import vocab  # noqa: PLC0415
  small = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
               query_pre_attn_scalar=16, max_position_embeddings=512)
  torch.manual_seed(0)
  hf = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**small))
  hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
  tokenizer = tmp_path / "tokenizer.model"          # a real SentencePiece file, by path
  shutil.copy(vocab.DEFAULT_MODEL_FILE, tokenizer)
  env = _env(devices=8, GEMMA_TOKENIZER_PATH=str(tokenizer))
  run([sys.executable, "-m", "model.runner.import_hf", "--hf_dir", str(tmp_path / "hf"),
       "--model_dir", str(tmp_path / "init")], str(tmp_path / "import.log"), env=env)
  shape = {"gemma_config.GemmaConfig.vocab_size": 4096, "gemma_config.GemmaConfig.embed_dim": 64,
           "gemma_config.GemmaConfig.hidden_dim": 128, "gemma_config.GemmaConfig.num_layers": 2,
           "gemma_config.GemmaConfig.num_heads": 4, "gemma_config.GemmaConfig.num_kv_heads": 2,
           "gemma_config.GemmaConfig.head_dim": 16,
           "gemma_config.GemmaConfig.query_pre_attn_scalar": 16.0,
           "gemma_config.GemmaConfig.sliding_window_size": 16,
           "gemma_config.GemmaConfig.attention_types": "('local', 'global')"}
  run(t5x_cmd("train", "gemma2_2b_finetune.gin", TOKENIZER_PATH=q(tokenizer),
              MODEL_DIR=q(tmp_path / "ft"), INITIAL_CHECKPOINT_PATH=q(tmp_path / "init" /
                                                                      "checkpoint_0"),
              TRAIN_STEPS=3, BATCH_SIZE=4, EVAL_STEPS=1, EVALUATOR_NUM_EXAMPLES=4,
              TASK_FEATURE_LENGTHS="{'inputs': 64, 'targets': 64}", **shape),
      str(tmp_path / "train.log"), env=env)
  imported = flat_state(tmp_path / "init" / "checkpoint_0")
  restored = flat_state(tmp_path / "ft" / "checkpoint_0")
  for key, value in imported.items():
    np.testing.assert_array_equal(restored[key], value, err_msg=key)
  assert np.isfinite(tb_scalars(tmp_path / "ft" / "train")["loss"][3])
  run(t5x_cmd("eval", "gemma2_2b_eval.gin", TOKENIZER_PATH=q(tokenizer),
              CHECKPOINT_PATH=q(tmp_path / "ft" / "checkpoint_3"),
              EVAL_OUTPUT_DIR=q(tmp_path / "eval"),
              **{"utils.DatasetConfig.batch_size": 4, "seqio.Evaluator.num_examples": 8,
                 "TASK_FEATURE_LENGTHS": "{'inputs': 64, 'targets': 64}"}, **shape),
      str(tmp_path / "eval.log"), env=env)
  rows = t5x_eval_metrics(tmp_path / "eval")
  assert rows[-1]["step"] == 3 and 0 <= rows[-1]["bleu"] <= 100
