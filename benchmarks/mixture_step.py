"""Does a mixture train slower than another? The recipe's training step on each mixture's own
batches, side by side in one process.

    .venv/bin/python -m benchmarks.mixture_step      # translation only vs the demo's mixture (~7 min)
    .venv/bin/python -m benchmarks.mixture_step --mixtures gemma_en_de_libreoffice_gettext,gemma_quiz_qa --steps 64

For each mixture, `--steps` batches of the trainer's stream (`model.runner.inputs.train_batches`
with `demo.run.RECIPE_TRAIN`: 8 rows of 96 + 96 tokens, best-fit packing, seed 0, on the fly)
go through the recipe model's training step (`model.runner.train_step`, the trainer's
loss-position buckets) in two ways:

- "in memory": the batches were read beforehand; only the step is timed;
- "stream": the trainer's loop, which reads the next batch while the step runs.

Mixtures and ways alternate, `--rounds` times after an uncounted round; the table gives ms
per step (median of the rounds), target tokens per step and the loss-position buckets seen.
The first mixture is the reference of the ratio column. Compilations (one per bucket) happen
before any timing.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np

DEFAULT_MIXTURES = "gemma_en_de_libreoffice_gettext,gemma_en_de_libreoffice_gettext_quiz"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--mixtures", default=DEFAULT_MIXTURES, help="comma-separated task/mixture names")
  p.add_argument("--steps", type=int, default=128, help="steps per mixture, way and round")
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args(argv)

  import jax
  from demo.run import RECIPE_PRESET, RECIPE_TRAIN
  from model.runner import inputs, optim, train
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  from model.runner.train_step import make_train_step

  mixtures = args.mixtures.split(",")
  inputs.import_modules([])
  for name in mixtures:
    inputs.subtasks(name)   # an unknown name fails here, before any work
  targs = train.TrainArgs(task=mixtures[0], model_dir="unused", preset=RECIPE_PRESET,
                          **RECIPE_TRAIN)
  lengths = {"inputs": targs.inputs_length, "targets": targs.targets_length}
  cfg = train.build_model_config(targs)
  model = GemmaDecoderOnlyModel(cfg, label_smoothing=targs.label_smoothing)
  params = model.get_initial_variables(
      jax.random.PRNGKey(0), {"decoder_input_tokens": (1, sum(lengths.values()))})["params"]
  tx = optim.adamw_with_clipping(targs.learning_rate, total_steps=10 * args.steps)
  state = tx.init(params)
  step = make_train_step(model, tx)

  def bucket(batch):
    return train.loss_positions_bucket(batch, targs.loss_positions_bucket)

  streams, held, info = {}, {}, {}
  for name in mixtures:
    streams[name] = inputs.train_batches(
        name, lengths, batch_size=targs.batch_size, seed=targs.seed,
        packing=targs.packing).as_numpy_iterator()
    held[name] = [next(streams[name]) for _ in range(args.steps)]
    info[name] = (
        statistics.mean(int(np.sum(b["decoder_target_tokens"] > 0)) for b in held[name]),
        dict(sorted(collections.Counter(str(bucket(b) or "all") for b in held[name]).items())))
    first_of_bucket = {bucket(b): b for b in reversed(held[name])}
    for positions, batch in first_of_bucket.items():   # one compilation per bucket
      params, state, metrics = step(params, state, batch, 0, positions)
  jax.block_until_ready(params)

  times = {(name, way): [] for name in mixtures for way in ("in memory", "stream")}
  # Round 0 is not counted: the first steps that read a stream while the model runs pay a
  # few seconds once (up to 0.2 s per step over 16 steps), whichever mixture comes first.
  for counted in [False] + [True] * args.rounds:
    for name in mixtures:
      t0 = time.perf_counter()
      for batch in held[name]:
        params, state, metrics = step(params, state, batch, 0, bucket(batch))
        float(metrics["loss"])
      t1 = time.perf_counter()
      it = streams[name]
      batch = next(it)
      t2 = time.perf_counter()
      for _ in range(args.steps):
        params, state, metrics = step(params, state, batch, 0, bucket(batch))
        batch = next(it)   # while the step runs, as the trainer does
        float(metrics["loss"])
      if counted:
        times[name, "in memory"].append((t1 - t0) / args.steps)
        times[name, "stream"].append((time.perf_counter() - t2) / args.steps)

  ms = {key: 1000 * statistics.median(t) for key, t in times.items()}
  print(f"recipe model, {targs.batch_size} x {sum(lengths.values())} tokens per step, "
        f"{args.steps} steps x {args.rounds} rounds per mixture and way")
  print(f"| mixture | target tokens / step | loss buckets | in memory, ms/step | stream, ms/step "
        f"| stream / {mixtures[0]}'s |")
  print("|---|---:|---|---:|---:|---:|")
  for name in mixtures:
    tokens, buckets = info[name]
    print(f"| {name} | {tokens:,.0f} | {buckets} | {ms[name, 'in memory']:.1f} | "
          f"{ms[name, 'stream']:.1f} | {ms[name, 'stream'] / ms[mixtures[0], 'stream']:.3f} |")


if __name__ == "__main__":
  main()
