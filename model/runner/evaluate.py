"""Evaluate a `model.runner.train` checkpoint with `seqio.Evaluator`: `python -m model.runner.evaluate`.

    python -m model.runner.evaluate --checkpoint_dir runs/ende --task gemma_en_de_libreoffice \\
        --split test                          # latest checkpoint; --step 400 for another one

For a task, or every sub-task of a mixture separately, the Evaluator runs the task's
postprocessor and metrics (BLEU, exact match) on greedy (or `--beam_size N` beam search) decodes from
`GemmaDecoderOnlyModel.predict_batch_with_aux` (and `score_batch` for score metrics). Results go to
`--output_dir` (default `<checkpoint_dir>/eval_<split>`):

    <task>-metrics.jsonl          one JSON line per evaluated step (seqio's JSONLogger)
    <task>-<step:06>.jsonl        inputs, targets and predictions, one line per example
    <task>/events.out.tfevents.*  TensorBoard scalars eval/<metric>
    summary.json                  every metric, example counts and decode time

and a table per task is printed:

    gemma_en_de_libreoffice (test, step 678, 1679 examples, ...)
      metric   value   baseline
      bleu      4.10   5.53 (copy the source)

Two seqio 0.0.20 problems are handled here: `Evaluator` does `np.array(predictions)`, which under
NumPy 2 fails when predictions have different lengths (every predict_fn passed through
`uniform_predictions` returns rows of one width), and `JSONLogger` does not create its output
directory (`JSONLogger` below does).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from gemma_seqio import flags
from gemma_seqio.flags import option
from gemma_seqio.special_tokens import BOS_ID, PAD_ID


# -- the two seqio 0.0.20 fixes ----------------------------------------------------------------

def pad_ragged(rows: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> np.ndarray:
  """Token rows of different lengths -> one int32 matrix (right-padded with `pad_id`).

  >>> pad_ragged([[5, 6, 107], [7]])
  array([[  5,   6, 107],
         [  7,   0,   0]], dtype=int32)

  Padding is harmless for decoding: the vocabulary decodes pad (0) to nothing, and the
  postprocessors cut at `<end_of_turn>` anyway.
  """
  rows = [np.asarray(r, dtype=np.int32).reshape(-1) for r in rows]
  width = max((len(r) for r in rows), default=0)
  out = np.full((len(rows), max(width, 1)), pad_id, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def uniform_predictions(predict_fn: Callable) -> Callable:
  """Wraps a seqio predict_fn so its (index, tokens) rows all have the same length.

  seqio 0.0.20 turns the predictions into `np.array(...)`; with NumPy 2 that raises
  "inhomogeneous shape" when rows differ in length (any predict_fn that trims its outputs).
  Also accepts the (indices_and_tokens, aux_values) form of predict_with_aux_fn.

  >>> fn = uniform_predictions(lambda ds, *a: [(0, [5, 6, 107]), (1, [7])])
  >>> [t.tolist() for _, t in fn(None)]
  [[5, 6, 107], [7, 0, 0]]
  """
  def wrapped(dataset, model_feature_shapes=None):
    out = predict_fn(dataset, model_feature_shapes)
    aux = None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
      out, aux = out
    out = list(out)
    if not out:
      return (out, aux) if aux is not None else out
    indices = [i for i, _ in out]
    tokens = pad_ragged([t for _, t in out])
    rows = [(int(i), tokens[k]) for k, i in enumerate(indices)]
    return (rows, aux) if aux is not None else rows
  return wrapped


def without_aux(predict_with_aux_fn: Callable) -> Callable:
  """predict_fn from a predict_with_aux_fn (metrics with (targets, predictions) need this form)."""
  def predict_fn(dataset, model_feature_shapes=None):
    out = predict_with_aux_fn(dataset, model_feature_shapes)
    return out[0] if isinstance(out, tuple) else out
  return predict_fn


def json_logger_cls():
  """seqio.JSONLogger that creates its output directory first (`model.runner.seqio_fixes.JSONLogger`)."""
  from model.runner import seqio_fixes  # pylint: disable=g-import-not-at-top
  return seqio_fixes.JSONLogger


# -- model functions for the Evaluator ---------------------------------------------------------

@dataclasses.dataclass
class PredictStats:
  examples: int = 0
  batches: int = 0
  seconds: float = 0.0
  generated_tokens: int = 0


def make_predict_fn(model, params, *, batch_size: int = 32, max_decode_length: Optional[int] = None,
                    prompt_multiple: int = 64, stats: Optional[PredictStats] = None,
                    progress: bool = True, desc: str = "decode", strategy=None, plan=None):
  """seqio predict_with_aux_fn: continuations of each example's prompt, greedy or with the
  model's strategy unless `strategy` (e.g. `BeamSearch(num_beams=4)`) is given.

  The prompt of an example is BOS + `inputs` (where `decoder_causal_attention` is 1).
  Examples are decoded in batches of similar prompt length (sorted, widths rounded up to
  `prompt_multiple`, batches padded to `batch_size`, so only a few shapes are compiled), with
  room for as many new tokens as the longest `targets` in the dataset (T5X's
  `max_decode_length`), capped by `max_decode_length`. Returns ([(index, tokens)], {'scores': [...]}) with tokens rows of
  one width.

  With a `plan` (`model.runner.mesh.MeshPlan`) each batch is split over the mesh's 'data' axis (so
  `batch_size` must be a multiple of it) and decoded on all its devices at once.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from model import decoding  # pylint: disable=g-import-not-at-top

  stats = stats if stats is not None else PredictStats()
  to_host = plan.to_host if plan is not None else np.asarray

  def predict_with_aux_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    t0 = time.time()
    indices, prompts, target_lens = [], [], []
    for index, ex in dataset.as_numpy_iterator():
      causal = ex["decoder_causal_attention"].astype(bool)
      prompts.append(ex["decoder_input_tokens"][causal])
      target_lens.append(int(np.sum(ex["decoder_loss_weights"] > 0)))
      indices.append(int(index))
    if not indices:
      return [], {"scores": []}
    longest = max(max(target_lens), 1)
    max_new = int(min(max_decode_length, longest) if max_decode_length else longest)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    results: Dict[int, Tuple[np.ndarray, float]] = {}
    bar = tqdm(total=len(order), desc=desc, disable=not progress, dynamic_ncols=True,
               mininterval=2.0, file=sys.stdout)
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      rows = [prompts[i] for i in chunk] + [[BOS_ID]] * (batch_size - len(chunk))  # filler: BOS
      tokens, lengths = decoding.pad_prompts(rows, prompt_multiple)
      tokens = np.pad(tokens, ((0, 0), (0, max_new)))      # room for the answers
      causal = (np.arange(tokens.shape[1]) < lengths[:, None]).astype(np.int32)
      batch = {"decoder_input_tokens": tokens, "decoder_causal_attention": causal}
      if plan is not None:
        batch = plan.replicate_batch(batch)
      decoder_params = {"max_decode_steps": max_new}
      if strategy is not None:
        decoder_params["strategy"] = strategy
      out, aux = model.predict_batch_with_aux(
          params, batch, rng=jax.random.PRNGKey(0), decoder_params=decoder_params)
      out = to_host(out)[:, :max_new]
      scores = to_host(aux["scores"])
      for row, i in enumerate(chunk):
        results[i] = (out[row], float(scores[row]))
        stats.generated_tokens += int(np.sum(out[row] > 0))
      stats.batches += 1
      bar.update(len(chunk))
    bar.close()
    stats.examples += len(indices)
    stats.seconds += time.time() - t0
    rows = [(indices[i], results[i][0]) for i in range(len(indices))]
    return rows, {"scores": [results[i][1] for i in range(len(indices))]}

  return predict_with_aux_fn


def make_score_fn(model, params, *, batch_size: int = 32, plan=None):
  """seqio score_fn: log p(targets | inputs) summed over target tokens, per example."""
  import jax  # pylint: disable=g-import-not-at-top
  score = jax.jit(lambda p, b: model.score_batch(p, b))
  to_host = plan.to_host if plan is not None else np.asarray

  def score_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    out = []
    for batch in dataset.batch(batch_size).as_numpy_iterator():
      indices, feats = batch
      n = len(indices)
      feats = {k: v for k, v in feats.items() if k.startswith("decoder_")}
      if n < batch_size:  # one shape for every batch
        feats = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
                 for k, v in feats.items()}
      if plan is not None:
        feats = plan.replicate_batch(feats)
      scores = to_host(score(params, feats))[:n]
      out.extend((int(i), float(s)) for i, s in zip(indices, scores))
    return out

  return score_fn


# -- checkpoint loading ------------------------------------------------------------------------

def run_dir(checkpoint_dir: str) -> Tuple[str, Optional[int]]:
  """(model dir, step named by the path or None) of a `--checkpoint_dir`.

  >>> run_dir("runs/ende/checkpoint_400")  # doctest: +ELLIPSIS
  ('/.../runs/ende', 400)
  """
  from model.runner import t5x_checkpoints  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(checkpoint_dir)
  name = os.path.basename(path)
  if name.startswith(t5x_checkpoints.CHECKPOINT_PREFIX + "_") and name.split("_")[-1].isdigit():
    return os.path.dirname(path), int(name.split("_")[-1])
  return path, None


def load_checkpoint(checkpoint_dir: str, step: Optional[int] = None):
  """(GemmaDecoderOnlyModel, params, step) from a `model.runner.train` directory.

  `checkpoint_dir` is the model dir (latest step, or `step`) or one `checkpoint_<step>` dir.
  Without a step, an incomplete latest checkpoint is skipped for the newest complete one (the
  skip is reported on stderr); a damaged one (checksum mismatch) is refused.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from model.runner import t5x_checkpoints  # pylint: disable=g-import-not-at-top
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # pylint: disable=g-import-not-at-top

  path, path_step = run_dir(checkpoint_dir)
  if path_step is not None:
    if step is not None and path_step != step:
      raise ValueError(f"--step {step} contradicts the checkpoint path {checkpoint_dir}")
    step = path_step
  for p in (os.path.abspath(checkpoint_dir), path):
    if os.path.exists(p) and not os.path.isdir(p):
      raise FileNotFoundError(f"--checkpoint_dir {checkpoint_dir!r}: {p} is a file, not a "
                              "model.runner.train directory")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--checkpoint_dir {checkpoint_dir!r} does not exist")
  steps = t5x_checkpoints.all_steps(path)
  if step in t5x_checkpoints.incomplete_steps(path):
    raise t5x_checkpoints.IncompleteCheckpointError(
        f"{t5x_checkpoints.checkpoint_path(path, step)} is incomplete (no "
        f"{t5x_checkpoints.STATE_KEY}/{t5x_checkpoints.METADATA_FILE}); complete ones: {steps}")
  if not steps:
    raise FileNotFoundError(f"no checkpoint_<step>/state directory in {path}")
  if step is None:
    step, note = t5x_checkpoints.newest_complete(path)
    if note:
      print(f"[evaluate] {note}", file=sys.stderr, flush=True)
  elif step not in steps:
    raise FileNotFoundError(f"no checkpoint for step {step} in {path}; available: {steps}")
  cfg = _model_config(path)
  raw = t5x_checkpoints.restore_state_dict(t5x_checkpoints.checkpoint_path(path, step))
  params = jax.tree.map(jnp.asarray, raw["target"])
  return GemmaDecoderOnlyModel(cfg), params, step


def _model_config(model_dir: str):
  """The GemmaConfig of a `model.runner.train` directory (model_config.json) or of a `t5x.train` one
  (its operative config.gin)."""
  from model.runner import t5x_run_config, train  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(model_dir, train.MODEL_CONFIG_FILE)):
    gin_config = t5x_run_config.find_gin_config(model_dir)
    if gin_config:
      return t5x_run_config.gemma_config_from_gin(gin_config)
  return train.load_model_config(model_dir)


# -- baselines ---------------------------------------------------------------------------------

def _most_common(counts) -> str:
  """The most frequent answer; ties go to the first in sorted order, not to the order the
  examples were read in (a cache and the source read them in different orders).

  >>> import collections
  >>> _most_common(collections.Counter(["Victoria", "Ottawa", "Ottawa", "Victoria"]))
  'Ottawa'
  """
  return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def baseline(task, split: str, num_examples: Optional[int] = None, use_cached: bool = False):
  """(name, metrics) of the trivial baseline for a task, scored with the task's own metrics.

  Translation tasks (a `source` feature): copy the source sentence. Others: predict the most
  common training answer for every example; for a task whose examples have a `group` (the quiz's
  tables), the most common training answer of the example's group ("CA" for an area code,
  "herd" for a collective noun), a stronger baseline than one answer for all.
  """
  import collections  # pylint: disable=g-import-not-at-top
  ds = task.get_dataset(None, split=split, shuffle=False, num_epochs=1, use_cached=use_cached)
  if num_examples:
    ds = ds.take(num_examples)
  examples = list(ds.as_numpy_iterator())
  if not examples:
    return None, {}
  post = task.postprocess_fn or (lambda x, **_: x)
  targets = [post(ex["targets_pretokenized"].decode("utf-8"), example=ex, is_target=True)
             for ex in examples]
  if "source" in examples[0]:
    name = "copy the source"
    preds = [ex["source"].decode("utf-8") for ex in examples]
  else:
    if "train" not in task.splits:
      return None, {}
    counts = collections.Counter()
    by_group = collections.defaultdict(collections.Counter)
    for ex in task.get_dataset(None, split="train", shuffle=False, num_epochs=1,
                               use_cached=use_cached).as_numpy_iterator():
      answer = post(ex["targets_pretokenized"].decode("utf-8"), example=ex, is_target=False)
      counts[answer] += 1
      if "group" in ex:
        by_group[ex["group"]][answer] += 1
    answer = _most_common(counts)
    if by_group and all("group" in ex for ex in examples):
      name = "most common answer of its group"
      preds = [_most_common(by_group[ex["group"]]) if ex["group"] in by_group else answer
               for ex in examples]
    else:
      name = f"most common answer {answer!r}"
      preds = [answer] * len(examples)
  metrics = {}
  for fn in task.predict_metric_fns:
    metrics.update(fn(targets, preds))
  return name, metrics


# -- evaluation --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalArgs:
  """Everything an evaluation depends on; each field is the CLI flag of the same name
  (`gemma_seqio.flags`)."""
  checkpoint_dir: str = option(
      help="a model.runner.train --model_dir (or one of its checkpoint_<step> dirs)")
  task: str = option(help="registered seqio Task or Mixture")
  split: str = option("test", help="the split to evaluate")
  step: Optional[int] = option(None, help="checkpoint step (default: latest)")
  output_dir: Optional[str] = option(None, help="default: <checkpoint_dir>/eval_<split>")
  batch_size: int = option(32, help="examples decoded at once")
  max_decode_length: Optional[int] = option(
      None, help="cap on new tokens per example (default: the longest target of the split)")
  num_examples: Optional[int] = option(None, help="only the first N examples of each task")
  inputs_length: Optional[int] = option(
      None, help="trim inputs to this many tokens (default: the longest)")
  targets_length: Optional[int] = option(None, help="trim targets to this many tokens")
  use_cached: bool = option(False, help="read the Beam-cached task data (see cache_scripts)")
  cache_dirs: Tuple[str, ...] = option((), metavar="DIR", help="seqio cache directories")
  module_imports: Tuple[str, ...] = option((), metavar="MODULE",
                                           help="modules that register your tasks")
  baselines: bool = option(False, help="also score copy-the-source / most-common-answer baselines")
  progress: bool = option(True, help="progress bars")
  beam_size: int = option(1, help="beam search with this many beams (1: the model's strategy, "
                                  "greedy)")
  length_penalty: float = option(0.6, help="beam search: rank by log p / ((5 + n) / 6) ** this")
  mesh: str = option("", metavar="data=N,model=M",
                     help="decode on a device mesh (batches split over 'data'); default one device")
  fsdp: bool = option(False, help="also split parameters over 'data'")
  allow_vocabulary_change: bool = option(
      False, help="evaluate although the task's vocabulary differs from the one the checkpoint "
                  "was trained with (<checkpoint_dir>/vocabulary.json)")


def check_args(args: EvalArgs) -> None:
  """Refuses flags that would fail deep inside the evaluation (a batch of 0 rows, ...).

  >>> check_args(EvalArgs(checkpoint_dir="d", task="t", batch_size=0))
  Traceback (most recent call last):
  ValueError: --batch_size must be >= 1, got 0
  """
  for name in ("batch_size", "beam_size", "max_decode_length", "num_examples", "inputs_length",
               "targets_length"):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise ValueError(f"--{name} must be >= 1, got {value}")


def _scalar(v) -> Any:
  import seqio  # pylint: disable=g-import-not-at-top
  if isinstance(v, seqio.metrics.Scalar):
    v = v.value
  try:
    return float(np.asarray(v))
  except (TypeError, ValueError):
    return str(v)


def evaluate(args: EvalArgs, *, model=None, params=None, step: Optional[int] = None) -> dict:
  """Runs seqio.Evaluator on a checkpoint; returns the summary dict (also in summary.json).

  `model`/`params`/`step` may be passed directly (then `checkpoint_dir` is only where the
  outputs go by default). A cached record that does not read back is a CacheCorruptError
  naming its shard.
  """
  check_args(args)
  from model.runner import inputs  # pylint: disable=g-import-not-at-top
  with inputs.naming_damaged_cache(args.task, args.split, args.use_cached):
    return _evaluate(args, model, params, step)


def _evaluate(args: EvalArgs, model, params, step: Optional[int]) -> dict:
  """`evaluate` (the evaluation itself)."""
  from model.runner import inputs, seqio_fixes, vocab_record  # pylint: disable=g-import-not-at-top
  inputs.import_modules(args.module_imports)
  inputs.add_cache_dirs(args.cache_dirs)
  import seqio  # pylint: disable=g-import-not-at-top

  if model is None:
    # The vocabulary first: a mismatch is refused before the parameters are read.
    note = vocab_record.check(run_dir(args.checkpoint_dir)[0], vocab_record.describe(args.task),
                              args.allow_vocabulary_change)
    if note:
      print(f"[evaluate] {note}", file=sys.stderr, flush=True)
    model, params, step = load_checkpoint(args.checkpoint_dir, args.step)
  plan = None
  if args.mesh or args.fsdp:
    from model.runner import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    plan = mesh_lib.MeshPlan.create(mesh_lib.MeshConfig.parse(args.mesh, fsdp=args.fsdp))
    if args.batch_size % plan.data_size:
      raise ValueError(f"--batch_size {args.batch_size} must be a multiple of the mesh's data "
                       f"axis ({plan.data_size})")
    params = plan.place(params, plan.param_shardings_for(model))
  step = -1 if step is None else int(step)
  output_dir = args.output_dir or os.path.join(args.checkpoint_dir, f"eval_{args.split}")
  os.makedirs(output_dir, exist_ok=True)

  provider = inputs.subtasks(args.task)  # also validates the name
  seq_len = None
  if args.inputs_length or args.targets_length:
    seq_len = {"inputs": args.inputs_length, "targets": args.targets_length}
  evaluator = seqio_fixes.PerTaskEvaluator(
      mixture_or_task_name=args.task, feature_converter=inputs.feature_converter(pack=False),
      eval_split=args.split, use_cached=args.use_cached, sequence_length=seq_len,
      num_examples=args.num_examples,
      logger_cls=[seqio.TensorBoardLogger, json_logger_cls()], log_dir=output_dir)
  if not evaluator.eval_tasks:
    names = [t.name for t in provider]
    raise ValueError(f"nothing to evaluate in {args.task!r} ({names}) on split {args.split!r}: "
                     "no sub-task has that split and a metric")

  strategy = None
  if args.beam_size > 1:
    from model.beams import BeamSearch  # pylint: disable=g-import-not-at-top
    strategy = BeamSearch(num_beams=args.beam_size, length_penalty=args.length_penalty)
  summary = {"task": args.task, "split": args.split, "step": step,
             "decoding": (f"beam search, {args.beam_size} beams, length penalty "
                          f"{args.length_penalty}" if strategy else "greedy"),
             "checkpoint_dir": os.path.abspath(args.checkpoint_dir), "tasks": {}}
  for task in evaluator.eval_tasks:
    # One Evaluator run per sub-task keeps its decode time and example count its own.
    stats = PredictStats()
    predict_with_aux = uniform_predictions(make_predict_fn(
        model, params, batch_size=args.batch_size, max_decode_length=args.max_decode_length,
        stats=stats, progress=args.progress, desc=task.name, strategy=strategy, plan=plan))
    t0 = time.time()
    metrics_future, _ = evaluator.evaluate_task(
        task,
        compute_metrics=True, step=step, predict_fn=without_aux(predict_with_aux),
        predict_with_aux_fn=predict_with_aux,
        score_fn=make_score_fn(model, params, batch_size=args.batch_size, plan=plan))
    metrics = {k: _scalar(v) for k, v in (metrics_future.result() or {}).get(task.name, {}).items()}
    entry = {"metrics": metrics, "examples": stats.examples or _count(evaluator, task),
             "decode_seconds": round(stats.seconds, 2),
             "seconds": round(time.time() - t0, 2),
             "generated_tokens": stats.generated_tokens}
    if args.baselines:
      name, base = baseline(task, args.split, args.num_examples, args.use_cached)
      if name:
        entry["baseline"] = {"name": name, "metrics": base}
    summary["tasks"][task.name] = entry
    print(format_table(task.name, args.split, step, entry), flush=True)
  evaluator.close()
  with open(os.path.join(output_dir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  summary["output_dir"] = output_dir
  return summary


def _count(evaluator, task) -> int:
  return int(evaluator.cached_task_datasets[task.name].cardinality().numpy())


def format_table(task_name: str, split: str, step: int, entry: Mapping[str, Any]) -> str:
  """A small fixed-width table of one task's metrics (and baseline, when present).

  >>> print(format_table("t", "test", 5, {"metrics": {"bleu": 21.3}, "examples": 9,
  ...                                     "seconds": 1.0, "baseline": {"name": "copy the source",
  ...                                                                  "metrics": {"bleu": 5.5}}}))
  t (test, step 5, 9 examples, 1.0 s)
    metric        value  baseline
    bleu          21.30  5.50 (copy the source)

  Per-group scores (`metrics.exact_match_by_group`) show their example counts:

  >>> print(format_table("quiz", "test", 5, {"metrics": {"exact_match": 4.5,
  ...     "exact_match/elements": 27.3, "examples/elements": 22}, "examples": 132}))
  quiz (test, step 5, 132 examples, 0.0 s)
    metric                      value
    exact_match                  4.50
    exact_match/elements (22)   27.30
  """
  from gemma_tasks.metrics import GROUP_SIZE, split_group  # pylint: disable=g-import-not-at-top
  base = entry.get("baseline") or {}
  metrics = entry["metrics"]
  labels = {}
  for k in metrics:
    name, group = split_group(k)
    if name == GROUP_SIZE:
      continue   # shown next to the group's scores
    size = metrics.get(f"{GROUP_SIZE}/{group}") if group else None
    labels[k] = k if size is None else f"{k} ({int(size)})"
  width = max([12, *map(len, labels.values())])
  lines = [f"{task_name} ({split}, step {step}, {entry.get('examples')} examples, "
           f"{entry.get('seconds', 0):.1f} s)",
           f"  {'metric':<{width}} {'value':>6}" + ("  baseline" if base else "")]
  for k, label in labels.items():
    v = metrics[k]
    val = f"{v:6.2f}" if isinstance(v, float) else str(v)
    line = f"  {label:<{width}} {val:>6}"
    if base and k in base.get("metrics", {}):
      line += f"  {base['metrics'][k]:.2f}" + ("" if split_group(k)[1] else f" ({base['name']})")
    lines.append(line)
  return "\n".join(lines)


# -- CLI ---------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> EvalArgs:
  """The `EvalArgs` of a command line (`gemma_seqio.flags`: one flag per field).

  >>> parse_args(["--checkpoint_dir", "x", "--task", "t", "--beam_size", "4"]).beam_size
  4
  """
  return flags.parse(EvalArgs, argv, prog="python -m model.runner.evaluate",
                     description="Evaluate a model.runner.train checkpoint on a SeqIO task or "
                                 "mixture with seqio.Evaluator (each sub-task separately).")


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  from gemma_seqio import cli_log, malloc_settings  # pylint: disable=g-import-not-at-top
  malloc_settings.keep_freed_memory()   # before JAX and TensorFlow start their threads
  # Before TensorFlow loads: library output goes to <output_dir>/evaluate.log.
  output_dir = args.output_dir or os.path.join(args.checkpoint_dir, f"eval_{args.split}")
  with cli_log.to_log_file(output_dir, "evaluate") as log:
    log.exit_code = _main(args)
  return log.exit_code


def _main(args: EvalArgs) -> int:
  try:
    summary = evaluate(args)
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"[evaluate] ERROR: {e}", file=sys.stderr, flush=True)
    return 2
  print(f"[evaluate] results in {summary['output_dir']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
