"""The main job, end to end on the embedded data: `python -m demo.run` (what `make demo` runs).

    python -m demo.run                          # default: <= 15 minutes on 2 CPU cores
    python -m demo.run --budget_minutes 45      # longer training, same pipeline
    python -m demo.run --recipe                 # the quality recipe (README: 25.75 BLEU, 30 min training)
    python -m demo.run --recipe --mixture gemma_en_de_libreoffice_gettext_quiz_facts_x3

Steps, each with its own progress output:
  1. cache  the training mixture's tasks (`gemma_en_de_libreoffice`, `gemma_en_de_gettext` and
            `gemma_quiz_qa` by default) with the Beam pipeline
            (`cache_scripts.cache_tasks`, in this process) into `<out>/cache` (skipped when
            already there);
  2. train  a small Gemma (the preset `recipe_gemma2`) on the cached mixture
            `gemma_en_de_libreoffice_gettext_quiz` (LibreOffice help pairs, gettext UI messages
            as extra translation data, 1 example in 25 from the quiz; `--mixture` for another) with
            `model.runner.train` (T5X-layout checkpoints in `<out>/model`), stopped by the time budget;
  3. eval   with `model.runner.evaluate` (seqio.Evaluator) on the test splits: LibreOffice en->de (BLEU),
            quiz (two splits) and TriviaQA-open (exact match), next to the trivial baselines; greedy
            decoding, or 4-beam search with --recipe (`--beam_size`);
  4. print  one table (the quiz also per table: elements, capitals, ...), write
            `<out>/results.json`, keep `<out>/model/learning_curve.png`.

The quiz is scored on two splits, table by table, next to the most common training answer of
each table: `reworded` asks the facts of its training split in words no training example uses
(did the model learn the facts, or the strings of its questions?); `test` asks facts that are
in no training example (what a model that knows only its training data can infer: close to
nothing). TriviaQA is not trained on: its row shows what the model does with questions it was
never taught to answer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import List, Optional, Sequence

from gemma_seqio import flags
from gemma_seqio.flags import option

TRANSLATION_TASK = "gemma_en_de_libreoffice"
# The default mixture (mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ). The ones that add the quiz's facts
# as statements cost the translation more than they give the quiz within 30 minutes of this
# model (README, the quiz): they are a --mixture away.
TRAIN_MIXTURE = "gemma_en_de_libreoffice_gettext_quiz"
# (task, split, examples scored) of the exact-match rows: the quiz's splits whole (960 and 132
# questions), the first 300 of TriviaQA's 11,313.
QA_EVALS = (("gemma_quiz_qa", "reworded", None), ("gemma_quiz_qa", "test", None),
            ("gemma_trivia_qa_open", "test", 300))


def tasks_to_cache(mixture: str) -> List[str]:
  """The tasks the demo Beam-caches: those `mixture` trains on (a task name is its own list).
  TriviaQA-open (18,800 examples) would cost minutes of a 15-minute budget for the 300 test
  questions the demo scores, so it is read on the fly. An unknown name raises ValueError.

  >>> tasks_to_cache("gemma_en_de_libreoffice_gettext_quiz")
  ['gemma_en_de_gettext', 'gemma_en_de_libreoffice', 'gemma_quiz_qa']
  """
  from model.runner import inputs  # pylint: disable=g-import-not-at-top
  return [t.name for t in inputs.subtasks(mixture)]

# The model of the demo and of the quality recipe: a `model.config` preset, also the T5X MODEL
# of model/runner/configs/gemma_small.gin.
RECIPE_PRESET = "recipe_gemma2"

# Training settings of the demo / recipe (TrainArgs fields). Rows of 96 + 96 tokens hold ~3
# LibreOffice pairs each (mean 41 prompt + 26 answer tokens); best-fit packing wastes less.
# 8 rows per step: twice the updates of 16 rows for the same tokens (the step's tokens/s was the
# same in one benchmark run, 17% lower than at 16 rows in another), which raised validation BLEU from 19.85 to 21.31 (README, the levers table); the
# learning rate scaled by sqrt(1/2) and the warmup kept at the same number of tokens. The model
# learns its ~60k pairs far better than it generalises: AdamW weight decay 0.1 (instead of 0.01)
# and label smoothing 0.1 regularise without slowing the step, validation 21.31 -> 22.85.
RECIPE_TRAIN = dict(inputs_length=96, targets_length=96, batch_size=8, packing="best_fit",
                    learning_rate=1.4e-3, warmup_steps=200, end_lr_factor=0.05, weight_decay=0.1,
                    label_smoothing=0.1, clip_norm=1.0, dtype="bfloat16", seed=0)


def _stage(title: str) -> None:
  print(f"\n=== {title} ===", flush=True)


def cache(tasks: Sequence[str], cache_dir: str, workers: int = 1) -> float:
  """Beam-caches the tasks (skips the ones already cached); returns seconds."""
  t0 = time.time()
  from cache_scripts import cache_tasks  # pylint: disable=g-import-not-at-top
  report = cache_tasks.cache_tasks(list(tasks), cache_dir, workers=workers)
  if not report.ok:
    raise RuntimeError(f"caching failed: {report}")
  for name in getattr(report, "written", []) or []:
    print(f"[cache] wrote {name}", flush=True)
  for name, why in (getattr(report, "skipped", {}) or {}).items():
    print(f"[cache] {name}: {why}", flush=True)
  return time.time() - t0


def measure_step_seconds(args, steps: int = 12) -> float:
  """Seconds per training step of this model and batch shape, on synthetic tokens (after
  compiling): the median of `steps` timed steps, since a single step on a shared CPU can be off
  by a third. The demo sizes its schedule with it, so the learning rate has decayed when the
  time budget ends."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from model.runner import optim, train  # pylint: disable=g-import-not-at-top
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # pylint: disable=g-import-not-at-top
  from model.runner.train_step import make_train_step  # pylint: disable=g-import-not-at-top
  cfg = train.build_model_config(args)
  model = GemmaDecoderOnlyModel(cfg, label_smoothing=args.label_smoothing)
  length = args.inputs_length + args.targets_length
  params = model.get_initial_variables(jax.random.PRNGKey(0),
                                       {"decoder_input_tokens": (1, length)})["params"]
  tx = optim.adamw_with_clipping(1e-3, total_steps=10)
  state = tx.init(params)

  # Loss weight on the second half of each row, about the share of answer tokens in packed
  # translation rows, so the trainer's loss-position saving is counted too.
  weights = np.zeros((args.batch_size, length), np.float32)
  weights[:, length // 2:] = 1
  positions = train.loss_positions_bucket({"decoder_loss_weights": weights},
                                          args.loss_positions_bucket)
  # The trainer's step, with dropout when the model has it (its random bits cost time too).
  step = make_train_step(model, tx, dropout_rng=jax.random.PRNGKey(1) if cfg.dropout_rate else None)

  tokens = np.random.default_rng(0).integers(4, 4000, (args.batch_size, length)).astype(np.int32)
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
           "decoder_loss_weights": weights}
  params, state, _ = step(params, state, batch, 0, positions)
  jax.block_until_ready(params)
  times = []
  for _ in range(steps):
    t0 = time.time()
    params, state, _ = step(params, state, batch, 0, positions)
    jax.block_until_ready(params)
    times.append(time.time() - t0)
  return float(np.median(times))


def results_table(rows: List[dict]) -> str:
  """One table: task, metric, model, baseline.

  >>> print(results_table([{"task": "t", "split": "test", "examples": 9, "metric": "bleu",
  ...                       "value": 12.3, "baseline": 5.5, "baseline_name": "copy the source"}]))
  task  split  examples  metric  model  baseline
  t     test          9  bleu    12.30  5.50 (copy the source)
  """
  head = ("task", "split", "examples", "metric", "model", "baseline")
  body = [(r["task"], r["split"], str(r["examples"]), r["metric"], f"{r['value']:.2f}",
           (f"{r['baseline']:.2f}" + (f" ({r['baseline_name']})" if r.get("baseline_name") else ""))
           if r.get("baseline") is not None else "-")
          for r in rows]
  widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
  right = {2, 4}

  def fmt(cells):
    out = []
    for i, c in enumerate(cells):
      last = i == len(cells) - 1
      out.append(c if last else (c.rjust(widths[i]) if i in right else c.ljust(widths[i])))
    return "  ".join(out)

  return "\n".join([fmt(head)] + [fmt(b) for b in body])


def group_rows(row: dict, entry: dict) -> List[dict]:
  """The per-group rows under a task's row (`exact_match/<group>` metrics, e.g. quiz tables).

  >>> entry = {"metrics": {"exact_match": 5.0, "exact_match/elements": 27.3,
  ...                      "examples/elements": 22},
  ...          "baseline": {"metrics": {"exact_match/elements": 0.0}}}
  >>> group_rows({"task": "quiz", "split": "test", "metric": "exact_match"}, entry)
  [{'task': '  quiz: elements', 'split': 'test', 'examples': 22, 'metric': 'exact_match', 'value': 27.3, 'baseline': 0.0, 'baseline_name': '', 'group': 'elements'}]
  """
  from gemma_tasks import metrics  # pylint: disable=g-import-not-at-top
  base = metrics.per_group((entry.get("baseline") or {}).get("metrics", {}), row["metric"])
  return [{"task": f"  {row['task']}: {group}", "split": row["split"], "examples": examples,
           "metric": row["metric"], "value": value, "baseline": base.get(group, (None,))[0],
           "baseline_name": "", "group": group}
          for group, (value, examples) in metrics.per_group(entry["metrics"], row["metric"]).items()]


DEFAULT_BUDGET_MINUTES = 15.0
RECIPE_BUDGET_MINUTES = 45.0
RECIPE_TRAIN_MINUTES = 30.0
EVAL_RESERVE = 0.3   # share of the budget kept for evaluation (~2,000 decodes and baselines)


def plan_minutes(budget_minutes: Optional[float], recipe: bool,
                 elapsed_minutes: float = 0.0) -> tuple:
  """(whole budget, training minutes) of a run. An explicit `--budget_minutes` always wins;
  `--recipe` only changes the defaults (45 minutes in all, 30 of them training).

  >>> plan_minutes(None, recipe=True)
  (45.0, 30.0)
  >>> plan_minutes(15, recipe=True)          # the explicit budget, training gets what is left
  (15.0, 10.5)
  >>> plan_minutes(None, recipe=False, elapsed_minutes=2)
  (15.0, 8.5)
  """
  if budget_minutes is not None and not budget_minutes > 0:
    raise ValueError(f"--budget_minutes must be > 0, got {budget_minutes}")
  if recipe and budget_minutes is None:
    return RECIPE_BUDGET_MINUTES, RECIPE_TRAIN_MINUTES
  budget = DEFAULT_BUDGET_MINUTES if budget_minutes is None else float(budget_minutes)
  return budget, max(1.0, budget * (1 - EVAL_RESERVE) - elapsed_minutes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoArgs:
  """The flags of `python -m demo.run` (one per field, `gemma_seqio.flags`)."""
  out: str = option("demo_out", help="everything is written here")
  budget_minutes: Optional[float] = option(
      None, help="wall-clock budget of the whole job; training gets what caching and evaluation "
                 f"leave (default: {DEFAULT_BUDGET_MINUTES:g}, {RECIPE_BUDGET_MINUTES:g} with "
                 "--recipe)")
  recipe: bool = option(False, help=f"the quality recipe: {RECIPE_TRAIN_MINUTES:g} minutes of "
                                    "training (unless --budget_minutes says otherwise) and 4-beam "
                                    "decoding")
  train_steps: Optional[int] = option(
      None, help="schedule length (default: from the budget, at the measured step time)")
  mixture: str = option(
      TRAIN_MIXTURE, help="the registered task or mixture to train on (its tasks are cached); "
                          "gemma_en_de_libreoffice_gettext_quiz_facts[_x3] add the quiz's facts "
                          "as statements")
  seed: int = option(RECIPE_TRAIN["seed"],
                     help="initialisation and data order of the training run")
  translation_eval_examples: Optional[int] = option(
      None, help="first N test examples of LibreOffice en->de (default: all 1,679)")
  qa_eval_examples: Optional[int] = option(
      None, help="first N examples of each QA split (default: the quiz's whole, TriviaQA's 300)")
  eval_batch_size: int = option(64, help="examples decoded at once")
  beam_size: Optional[int] = option(
      None, help="beams when decoding the test splits (default: 4 with --recipe, else 1 = "
                 "greedy; 4 beams decode ~4x slower)")
  length_penalty: float = option(
      0.8, help="beam search ranks by log p / ((5 + n) / 6) ** this (0.8: the best of "
                "0.6 / 0.8 / 1.0 on the LibreOffice validation split)")
  max_decode_length: int = option(
      128, help="new tokens per example at most (99%% of LibreOffice test targets are shorter "
                "than 122 tokens; the longest is 254). A model that never ends its answer costs "
                "the full length on every row, so this bounds the eval time")
  cache_dir: Optional[str] = option(
      None, help="seqio cache directory (default: <out>/cache); tasks already cached there are "
                 "not cached again")
  workers: int = option(1, help="Beam workers for caching (README: 1 is faster on 2 CPUs)")
  cache: bool = option(True, help="cache the tasks with Beam first (--no_cache: read them on "
                                  "the fly)")
  progress: bool = option(True, help="progress bars")


def build_parser():
  """The demo's `argparse` parser, generated from `DemoArgs`."""
  return flags.build_parser(
      DemoArgs, prog="python -m demo.run",
      description="End-to-end demo: Beam caching -> training -> seqio evaluation -> one table.")


def main(argv: Optional[Sequence[str]] = None) -> int:
  opts = flags.from_namespace(DemoArgs, build_parser().parse_args(argv))
  t_start = time.time()
  try:
    plan_minutes(opts.budget_minutes, opts.recipe)   # a bad budget stops before any work
  except ValueError as e:
    print(f"[demo] ERROR: {e}", file=sys.stderr, flush=True)
    return 2
  out = os.path.abspath(opts.out)
  os.makedirs(out, exist_ok=True)
  from gemma_seqio import cli_log, malloc_settings  # pylint: disable=g-import-not-at-top
  malloc_settings.keep_freed_memory()   # before JAX and TensorFlow start their threads
  # Before TensorFlow loads: library output of all three steps goes to <out>/demo.log.
  with cli_log.to_log_file(out, "demo") as log:
    log.exit_code = _run(opts, out, t_start)
  return log.exit_code


def _run(opts: DemoArgs, out: str, t_start: float) -> int:
  """The three steps and the table of `main`."""
  cache_dir = os.path.abspath(opts.cache_dir) if opts.cache_dir else os.path.join(out, "cache")
  model_dir = os.path.join(out, "model")

  from model.runner import evaluate, train  # pylint: disable=g-import-not-at-top
  try:
    cached_tasks = tasks_to_cache(opts.mixture)
  except ValueError:   # the registry's unknown-name error; the demo lists its own choices
    import seqio  # pylint: disable=g-import-not-at-top
    ours = ", ".join(n for n in seqio.MixtureRegistry.names() if n.startswith("gemma_en_de"))
    print(f"[demo] ERROR: --mixture {opts.mixture!r} is not a registered task or mixture "
          f"(the translation mixtures: {ours})", file=sys.stderr, flush=True)
    return 2

  # 1. cache
  use_cached = opts.cache
  cache_seconds = 0.0
  if use_cached:
    _stage(f"1/3 caching {', '.join(cached_tasks)} with Beam -> {cache_dir}")
    cache_seconds = cache(cached_tasks, cache_dir, workers=opts.workers)
    print(f"[cache] {cache_seconds:.0f} s", flush=True)

  # 2. train: what is left of the budget minus a reserve for evaluation (decoding ~2,000
  # test examples and the baselines).
  _, train_minutes = plan_minutes(opts.budget_minutes, opts.recipe, (time.time() - t_start) / 60)
  args = train.TrainArgs(
      task=opts.mixture, model_dir=model_dir, train_steps=1, save_every=100, keep=2,
      log_every=10, time_budget_minutes=train_minutes, use_cached=use_cached,
      cache_dirs=(cache_dir,) if use_cached else (), progress=opts.progress,
      preset=RECIPE_PRESET, **{**RECIPE_TRAIN, "seed": opts.seed})
  steps = opts.train_steps
  saved = os.path.join(model_dir, train.TRAIN_ARGS_FILE)
  if not steps and os.path.exists(saved):   # resuming an interrupted demo: same schedule
    with open(saved, encoding="utf-8") as f:
      steps = json.load(f)["train_steps"]
  fit = not opts.train_steps   # no --train_steps: the schedule follows the time budget
  if not steps:
    seconds = measure_step_seconds(args)
    # The loop (input pipeline, logging, the odd recompilation) adds ~8% to the bare step here.
    # A first estimate: the trainer re-sizes it from the step time of the real loop.
    steps = max(20, int(train_minutes * 60 / (seconds * 1.08)))
    print(f"[demo] {seconds:.2f} s per step measured -> a schedule of {steps} steps, re-sized "
          "as the run goes so that it ends decayed when the time is up", flush=True)
  args = dataclasses.replace(args, train_steps=steps, fit_schedule_to_budget=fit)
  _stage(f"2/3 training on {opts.mixture}: {steps} steps, at most {train_minutes:.1f} min")
  result = train.train(args)
  steps = (train.fitted_schedule(model_dir) or (steps,))[0]   # the length it was re-sized to

  # 3. evaluate
  beam_size = opts.beam_size or (4 if opts.recipe else 1)
  _stage("3/3 evaluating on the test splits" + (
      f" ({beam_size} beams, length penalty {opts.length_penalty})" if beam_size > 1 else
      " (greedy)"))
  rows = []
  eval_plan = [(TRANSLATION_TASK, "test", opts.translation_eval_examples)]
  eval_plan += [(t, split, opts.qa_eval_examples or n) for t, split, n in QA_EVALS]
  summaries = {}
  for task, split, n in eval_plan:
    cached = use_cached and task in cached_tasks
    summary = evaluate.evaluate(evaluate.EvalArgs(
        checkpoint_dir=model_dir, task=task, split=split, num_examples=n,
        batch_size=opts.eval_batch_size, max_decode_length=opts.max_decode_length,
        baselines=True, use_cached=cached, beam_size=beam_size,
        length_penalty=opts.length_penalty,
        cache_dirs=(cache_dir,) if cached else (), progress=opts.progress,
        output_dir=os.path.join(out, "eval", task, split)))
    summaries.setdefault(task, summary)
    entry = summary["tasks"][task]
    base = entry.get("baseline") or {}
    metric = "bleu" if "bleu" in entry["metrics"] else "exact_match"
    rows.append({"task": task, "split": split, "examples": entry["examples"], "metric": metric,
                 "value": entry["metrics"][metric],
                 "baseline": base.get("metrics", {}).get(metric),
                 "baseline_name": base.get("name", ""), "decode_seconds": entry["decode_seconds"]})
    rows.extend(group_rows(rows[-1], entry))

  total = time.time() - t_start
  _stage("results")
  print(results_table(rows))
  print(f"\nmodel: {RECIPE_PRESET} ({result.step} steps of {steps}, "
        f"{result.seconds / 60:.1f} min training, final train loss "
        f"{result.loss or float('nan'):.3f})")
  print(f"total {total / 60:.1f} min (cache {cache_seconds / 60:.1f}, train "
        f"{result.seconds / 60:.1f}, eval decode "
        f"{sum(r.get('decode_seconds', 0) for r in rows) / 60:.1f})")
  print(f"learning curve: {os.path.join(model_dir, train.CURVE_FILE)}")
  with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"rows": rows, "train_steps": result.step, "schedule_steps": steps,
               "train_seconds": result.seconds, "cache_seconds": cache_seconds,
               "total_seconds": total, "model": RECIPE_PRESET,
               "mixture": opts.mixture, "train": {**RECIPE_TRAIN, "seed": opts.seed},
               "decoding": summaries[TRANSLATION_TASK]["decoding"]}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
