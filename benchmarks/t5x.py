"""`t5x.train` next to `model.runner.train`: same model, same initial checkpoint, same batches.

    python benchmarks/t5x.py [--steps 100] [--batch_size 4] [--out /tmp/t5x_bench]

Needs T5X installed (`make test-t5x` builds .venv-t5x with it). Trains the recipe's model shape
(float32) on `gemma_en_de_libreoffice` rows of 96 + 96 tokens with both trainers from one
checkpoint_0, T5X with the data seed of ours and statistics every step, and prints the largest
relative difference of the per-step losses and each trainer's wall time per step (median of the
steps after compilation, from T5X's `timing/seconds` summaries and our `train_metrics.jsonl`).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def scalars(log_dir):
  import tensorflow as tf  # noqa: PLC0415
  from tensorboard.backend.event_processing import event_accumulator  # noqa: PLC0415
  out = {}
  for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
      for ev in acc.Tensors(tag):
        value = tf.make_ndarray(ev.tensor_proto)
        if value.size == 1 and value.dtype.kind == "f":
          out.setdefault(tag, {})[ev.step] = float(value)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--out", default="/tmp/t5x_bench")
  a = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax  # noqa: PLC0415
  import t5x  # noqa: PLC0415
  from demo import run as demo_run  # noqa: PLC0415
  from model.runner import optim, t5x_checkpoints, train  # noqa: PLC0415
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # noqa: PLC0415

  t5x_root = os.path.dirname(os.path.dirname(t5x.__file__))
  if os.path.exists(a.out):
    raise SystemExit(f"{a.out} exists; pass a new --out")
  settings = dict(task="gemma_en_de_libreoffice", inputs_length=96, targets_length=96,
                  batch_size=a.batch_size, train_steps=a.steps, warmup_steps=20,
                  learning_rate=3e-3, end_lr_factor=0.1, shuffle_buffer_size=0,
                  packing="in_order", loss_positions_bucket=0, seed=0, log_every=1,
                  save_every=a.steps, progress=False, dtype="float32",
                  preset=demo_run.RECIPE_PRESET)
  t0 = time.time()
  train.train(train.TrainArgs(model_dir=os.path.join(a.out, "ours"), **settings))
  ours_wall = time.time() - t0
  cfg = train.load_model_config(os.path.join(a.out, "ours"))
  init_rng, _ = jax.random.split(jax.random.PRNGKey(0))
  params = GemmaDecoderOnlyModel(cfg).get_initial_variables(
      init_rng, {"decoder_input_tokens": (1, 192)})["params"]
  manager = t5x_checkpoints.T5XCheckpointManager(os.path.join(a.out, "init"))
  manager.save(0, params, optim.adamw_with_clipping(total_steps=a.steps).init(params))
  manager.close()
  cmd = [sys.executable, "-m", "t5x.train", f"--gin_search_paths={REPO},{t5x_root}",
         f"--gin_file={REPO}/model/runner/configs/gemma_en_de_libreoffice_finetune.gin",
         f"--gin.MODEL_DIR='{a.out}/t5x'",
         f"--gin.INITIAL_CHECKPOINT_PATH='{a.out}/init/checkpoint_0'",
         f"--gin.TRAIN_STEPS={a.steps}", f"--gin.BATCH_SIZE={a.batch_size}",
         "--gin.WARMUP_STEPS=20", "--gin.train/utils.DatasetConfig.seed=0",
         "--gin.train.stats_period=1", "--gin.train.train_eval_dataset_cfg=None",
         "--gin.train.infer_eval_dataset_cfg=None"]
  t0 = time.time()
  with open(os.path.join(a.out, "t5x.log"), "w", encoding="utf-8") as log:
    subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
  t5x_wall = time.time() - t0
  theirs = scalars(os.path.join(a.out, "t5x", "train"))
  with open(os.path.join(a.out, "ours", train.METRICS_FILE), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  steps = range(1, a.steps + 1)
  ours_loss = np.array([r["loss"] for r in rows])
  t5x_loss = np.array([theirs["loss"][s] for s in steps])
  rel = np.abs(t5x_loss - ours_loss) / np.abs(ours_loss)
  ours_step = np.median(np.diff([r["time"] for r in rows])[5:])
  t5x_step = np.median([theirs["timing/seconds"][s] for s in steps][5:])
  print(f"{a.steps} steps, batch {a.batch_size} x 192, recipe model (float32)")
  print("| trainer | median s/step | whole command |")
  print("|---|---:|---:|")
  print(f"| model.runner.train | {ours_step:.3f} | {ours_wall:.0f} s |")
  print(f"| t5x.train | {t5x_step:.3f} | {t5x_wall:.0f} s |")
  print(f"ratio t5x/ours per step: {t5x_step / ours_step:.2f}")
  print(f"losses: max relative difference {rel.max():.2e} (step {int(rel.argmax()) + 1}), "
        f"first {ours_loss[0]:.4f} last {ours_loss[-1]:.4f}")


if __name__ == "__main__":
  main()
