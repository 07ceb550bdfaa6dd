"""The first N training losses of a model on a fixed stream of batches, to compare two checkouts.

    python -m benchmarks.step_losses --dtype float32 --out /tmp/new.json      # this checkout
    # another checkout's model (e.g. `git worktree add /tmp/old <rev>`), this script:
    PYTHONPATH=/tmp/old python benchmarks/step_losses.py --dtype float32 --out /tmp/old.json
    python -m benchmarks.step_losses --compare /tmp/old.json /tmp/new.json

The batches are a copy task in PrefixLM rows (`--batch` rows of `--length` tokens: a random
first half, the same tokens again as the weighted answer), so the loss falls from ~8.9 to ~0.02
in 300 steps, through a sharp drop when the model learns to copy (~step 120): the place where
two runs that differ only in rounding part the most. The trainer's step and optimizer
(`make_train_step`, `optim.adamw_with_clipping` with the recipe's settings), logits at the
weighted positions as the trainer computes them.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def copy_batches(steps: int, batch: int, length: int, vocab: int, seed: int = 0):
  """Yields `steps` PrefixLM batches: prompt = BOS + random half, answer = the half again."""
  rs = np.random.RandomState(seed)
  half = length // 2
  for _ in range(steps):
    first = rs.randint(4, vocab, size=(batch, half)).astype(np.int32)
    targets = np.concatenate([first, first], 1)
    weights = np.zeros((batch, length), np.float32)
    weights[:, half:] = 1
    yield {
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.concatenate([np.full((batch, 1), 2, np.int32),
                                                targets[:, :-1]], 1),
        "decoder_loss_weights": weights,
        "decoder_causal_attention": np.broadcast_to(np.arange(length) <= half,
                                                    (batch, length)).astype(np.int32),
    }


def run(preset: str, dtype: str, steps: int, batch: int, length: int) -> list:
  import jax  # pylint: disable=import-outside-toplevel
  from model.config import get_config  # pylint: disable=import-outside-toplevel
  from model.runner import optim  # pylint: disable=import-outside-toplevel
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # pylint: disable=import-outside-toplevel
  from model.runner.train import loss_positions_bucket  # pylint: disable=import-outside-toplevel
  from model.runner.train_step import make_train_step  # pylint: disable=import-outside-toplevel
  model = GemmaDecoderOnlyModel(get_config(preset).replace(dtype=dtype))
  tx = optim.adamw_with_clipping(2e-3, total_steps=steps, warmup_steps=30, weight_decay=0.01,
                                 clip_norm=1.0)
  params = model.get_initial_variables(jax.random.PRNGKey(0),
                                       {"decoder_input_tokens": (batch, length)})["params"]
  opt_state = tx.init(params)
  step = make_train_step(model, tx)
  losses = []
  for i, features in enumerate(copy_batches(steps, batch, length, 400)):
    params, opt_state, metrics = step(params, opt_state, features, i,
                                      loss_positions_bucket(features, 256))
    losses.append(float(metrics["loss"]))
  return losses


def compare(a: list, b: list) -> str:
  diffs = [abs(x - y) for x, y in zip(a, b)]
  worst = int(np.argmax(diffs))
  rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
  return (f"{len(diffs)} steps: largest difference {diffs[worst]:.2e} at step {worst} (loss "
          f"{a[worst]:.4f}), largest relative {rel:.2e}; first 100 steps {max(diffs[:100]):.2e}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="recipe_gemma2")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--length", type=int, default=192)
  p.add_argument("--out", help="write the losses (JSON list) here")
  p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two --out files to compare")
  args = p.parse_args(argv)
  if args.compare:
    a, b = (json.load(open(path)) for path in args.compare)
    print(compare(a, b))
    return 0
  losses = run(args.preset, args.dtype, args.steps, args.batch, args.length)
  print(f"loss {losses[0]:.5f} -> {losses[len(losses) // 3]:.5f} -> {losses[-1]:.5f}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(losses, f)
  return 0


if __name__ == "__main__":
  sys.exit(main())
