"""Train a Gemma on a SeqIO task or mixture, T5X style: `python -m model.runner.train`.

    python -m model.runner.train --task gemma_en_de_libreoffice --model_dir runs/ende \\
        --preset small_gemma2 --train_steps 2000 --batch_size 16

What it does, in order:
  * reads `--task` with `seqio.get_dataset` and the Gemma PrefixLM converter (packed rows of
    `inputs_length + targets_length` tokens), on the fly or from a Beam cache (`--use_cached`,
    `--cache_dirs`); `--module_imports my.tasks` registers user tasks first;
  * trains with AdamW (warmup + cosine, gradient clipping, `model.runner.optim`);
  * writes orbax checkpoints in T5X's layout (`<model_dir>/checkpoint_<step>/state`, see
    `model.runner.t5x_checkpoints`) every `--save_every` steps, atomically, keeping the last `--keep`;
  * resumes from the latest checkpoint of `--model_dir` with exactly the batches an
    uninterrupted run would have seen (the stream is a pure function of the seed; the
    consumed batches are skipped);
  * stops on a NaN/inf loss or gradient without saving, so the last good checkpoint stays;
  * on SIGINT (Ctrl-C) or SIGTERM (preemption) finishes the current step, saves it and exits
    (code 130 / 143), saying where it saved;
  * refuses bad flags, a file as `--model_dir`, an unknown task or preset before creating
    anything (`model.runner.train_checks`); skips an incomplete latest checkpoint (saying so) and
    refuses a damaged one (`model.runner.t5x_checkpoints`); refuses to resume with another vocabulary
    (`model.runner.vocab_record`, `--allow_vocabulary_change` to override);
  * shows a progress bar (loss, tokens/s), writes TensorBoard scalars to `<model_dir>/train`,
    `train_metrics.jsonl` and, at the end, `learning_curve.png`;
  * as a CLI, keeps library output (TF, orbax, SentencePiece) off the terminal, in
    `<model_dir>/train.log` (`gemma_seqio.cli_log`); a cached record that does not read back is an
    error naming its shard (`gemma_tasks.cache_damage`).

`<model_dir>/model_config.json` (the GemmaConfig), `train_args.json` and `vocabulary.json` make
the directory self-describing: `model.runner.evaluate --checkpoint_dir <model_dir>` needs nothing else.
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import time
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from gemma_seqio import flags
from gemma_seqio.flags import option

TRAIN_ARGS_FILE = "train_args.json"
SCHEDULE_FILE = "schedule.json"   # the length of a run re-sized by --fit_schedule_to_budget
MODEL_CONFIG_FILE = "model_config.json"
METRICS_FILE = "train_metrics.jsonl"
# A fitted schedule follows the rate of the last this-many steps: long enough that the noise of
# a shared CPU does not re-size it back and forth, short enough to follow the machine's drift.
REFIT_WINDOW = 1000
CURVE_FILE = "learning_curve.png"

# Flags that only shape a new run: a resumed run keeps the model it has (model_config.json), so
# these are kept as recorded rather than written down as if they had been used.
_NEW_RUN_ONLY = ("preset", "model_overrides", "init_from_hf", "dtype")

# Arguments that decide which batches and which updates a step sees: a resumed run must use
# the same values, or it would not continue the run it claims to continue.
_RESUME_INVARIANTS = ("task", "inputs_length", "targets_length", "batch_size", "seed", "pack",
                      "packing", "shuffle_buffer_size", "train_steps", "learning_rate", "warmup_steps", "end_lr_factor",
                      "weight_decay", "clip_norm", "b2", "label_smoothing", "input_shards")


class TrainingDiverged(RuntimeError):
  """The loss or the gradient norm became NaN/inf; nothing was saved after the last good step."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainArgs:
  """Everything a training run depends on; each field is the CLI flag of the same name
  (`gemma_seqio.flags`). Frozen: a changed run is `dataclasses.replace(args, ...)`."""
  task: str = option(help="registered seqio Task or Mixture name")
  model_dir: str = option(help="checkpoints, config, TensorBoard and curves go here; resumes if "
                               "it has checkpoints")
  preset: str = option("small_gemma2", help="model.config preset (tiny_gemma1, tiny_gemma2, "
                                            "small_gemma2, recipe_gemma2, gemma2_2b, ...)")
  model_overrides: Mapping[str, str] = option(
      {}, metavar="FIELD=VALUE", help="change a GemmaConfig field, e.g. num_layers=4 (repeatable)")
  init_from_hf: Optional[str] = option(
      None, metavar="DIR",
      help="start from a Hugging Face Gemma save_pretrained directory (fine-tuning)")
  inputs_length: int = option(128, help="prompt tokens of a row")
  targets_length: int = option(128, help="answer tokens of a row")
  batch_size: int = option(16, help="rows of inputs_length + targets_length tokens per step")
  pack: bool = option(True, help="pack several examples into a row (--no_pack: one per row)")
  packing: str = option("in_order", choices=("in_order", "best_fit"),
                        help="in_order = seqio's packing; best_fit fills rows more densely")
  shuffle_buffer_size: int = option(
      10_000, help="examples shuffled before packing, on top of the task's own shuffle "
                   "(0: only the task's)")
  train_steps: int = option(1000, help="total steps of the run (the schedule ends here)")
  learning_rate: float = option(1e-3, help="peak learning rate")
  warmup_steps: int = option(100, help="linear warmup steps")
  end_lr_factor: float = option(0.1, help="final learning rate = learning_rate * this")
  weight_decay: float = option(0.01, help="AdamW weight decay")
  clip_norm: float = option(1.0, help="global gradient-norm clip")
  b2: float = option(0.98, help="Adam second-moment decay")
  label_smoothing: float = option(
      0.0, help="T5X's label smoothing: the target gets 1 - this, the rest of the vocabulary "
                "shares it (the logged loss is T5X's, 0 at the soft targets)")
  dtype: str = option("float32", choices=("float32", "bfloat16"),
                      help="activation dtype (parameters and optimizer state stay float32)")
  loss_positions_bucket: int = option(
      256, help="compute logits only at the batch's weighted positions, rounded up to a "
                "multiple of this (one compilation per multiple seen); 0: at every position")
  seed: int = option(0, help="initialisation and data order")
  save_every: int = option(200, help="steps between checkpoints")
  keep: int = option(3, help="checkpoints kept on disk")
  log_every: int = option(10, help="steps between log lines")
  max_steps_per_run: Optional[int] = option(
      None, help="stop (and save) after this many steps of this invocation; rerun to resume")
  time_budget_minutes: Optional[float] = option(
      None, help="stop (and save) when this much wall time has passed")
  fit_schedule_to_budget: bool = option(
      False, help="with --time_budget_minutes: re-size the schedule (--train_steps is the first "
                  "estimate) from the step time measured as the run goes, so the learning rate "
                  "has decayed when the time is up; the length used is kept in schedule.json")
  use_cached: bool = option(False, help="read the Beam-cached task data (see cache_scripts)")
  cache_dirs: Tuple[str, ...] = option((), metavar="DIR", help="seqio cache directories")
  module_imports: Tuple[str, ...] = option((), metavar="MODULE",
                                           help="modules that register your tasks")
  progress: bool = option(True, help="a progress bar (--no_progress: log lines)")
  allow_vocabulary_change: bool = option(
      False, help="resume although the task's vocabulary differs from the one the run was "
                  "trained with (recorded in <model_dir>/vocabulary.json)")
  # Beyond one device (`model.runner.mesh`): the mesh, FSDP, the input shards that make up a batch
  # (default: one per process), and the multi-host rendezvous.
  mesh: str = option("", metavar="data=N,model=M",
                     help="device mesh; default: every device on the data axis")
  fsdp: bool = option(False, help="also split every parameter and its optimizer state over the "
                                  "data axis")
  input_shards: Optional[int] = option(
      None, help="seqio shards that make up a batch (default: one per process)")
  coordinator_address: Optional[str] = option(
      None, metavar="HOST:PORT", help="multi-host: process 0's address (jax.distributed.initialize)")
  num_processes: Optional[int] = option(None, help="multi-host: number of processes")
  process_id: Optional[int] = option(None, help="multi-host: this process's index")
  jax_distributed: bool = option(
      False, help="multi-host from the environment JAX reads on TPU pods / SLURM")


@dataclasses.dataclass
class TrainResult:
  step: int                  # last completed step (== a checkpoint on disk)
  loss: Optional[float]      # mean loss of the last logging window
  stopped_early: bool        # --max_steps_per_run / --time_budget_minutes hit before train_steps
  seconds: float
  model_dir: str
  interrupted: Optional[str] = None   # 'SIGINT' / 'SIGTERM' when a signal stopped the run


# -- model configuration ------------------------------------------------------------------------

def _coerce(value: str, current):
  """'256' -> 256 when the field is an int, 'none' -> None, etc. (for --model_overrides)."""
  if not isinstance(value, str):
    return value
  if value.lower() in ("none", "null"):
    return None
  if isinstance(current, bool):
    return value.lower() in ("1", "true", "yes")
  if isinstance(current, int):
    return int(value)
  if isinstance(current, float) or current is None:
    try:
      return float(value)
    except ValueError:
      return value
  return value


def build_model_config(args: TrainArgs):
  """The GemmaConfig of a fresh run: a preset (or the HF checkpoint's), overrides, dtype.

  >>> build_model_config(TrainArgs(task="t", model_dir="d", preset="tiny_gemma1",
  ...                              model_overrides={"num_layers": "3"})).num_layers
  3
  """
  from model import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.get_config(args.preset)
  if args.model_overrides:
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(args.model_overrides) - fields)
    if unknown:
      raise ValueError(f"--model_overrides: unknown GemmaConfig field(s) {unknown}; "
                       f"fields: {sorted(fields)}")
    changes = {k: _coerce(v, getattr(cfg, k)) for k, v in args.model_overrides.items()}
    cfg = cfg.replace(**changes)
  if args.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"--dtype must be float32 or bfloat16, got {args.dtype!r}")
  return cfg.replace(dtype=args.dtype)


def config_to_json(cfg) -> dict:
  return dataclasses.asdict(cfg)


def config_from_json(d: dict):
  from model.config import GemmaConfig  # pylint: disable=g-import-not-at-top
  d = dict(d)
  d["attention_types"] = tuple(d.get("attention_types") or ())
  return GemmaConfig(**d)


def load_model_config(model_dir: str):
  path = os.path.join(model_dir, MODEL_CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {model_dir!r} a model.runner.train directory?")
  with open(path, encoding="utf-8") as f:
    return config_from_json(json.load(f))


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _check_resume_args(model_dir: str, args: TrainArgs) -> None:
  path = os.path.join(model_dir, TRAIN_ARGS_FILE)
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  now = dataclasses.asdict(args)
  diff = {k: (saved.get(k), now[k]) for k in _RESUME_INVARIANTS
          if k in saved and saved[k] != now[k]}
  if diff:
    lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
    raise ValueError(f"{model_dir} holds a run with other settings ({lines}); resume with the "
                     "same settings or use a new --model_dir")


def _keep_recorded_model_flags(model_dir: str, args: TrainArgs) -> TrainArgs:
  """`args` with the new-run-only flags as the run recorded them, saying which were ignored.

  >>> import tempfile; run = tempfile.mkdtemp()
  >>> _write_json(os.path.join(run, TRAIN_ARGS_FILE), {"dtype": "float32"})   # a float32 run
  >>> args = TrainArgs(task="t", model_dir=run, dtype="bfloat16")
  >>> _keep_recorded_model_flags(run, args).dtype  # doctest: +ELLIPSIS
  [train] resuming: --dtype 'bfloat16' ignored, the run's 'float32' is kept (...)
  'float32'
  """
  path = os.path.join(model_dir, TRAIN_ARGS_FILE)
  if not os.path.exists(path):
    return args
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  now = dataclasses.asdict(args)
  kept = {k: saved[k] for k in _NEW_RUN_ONLY if k in saved and saved[k] != now[k]}
  if kept:
    flags = "; ".join(f"--{k} {now[k]!r} ignored, the run's {v!r} is kept"
                      for k, v in sorted(kept.items()))
    print(f"[train] resuming: {flags} (they only shape a new run; the model is "
          f"{MODEL_CONFIG_FILE} of {model_dir})", flush=True)
  return dataclasses.replace(args, **kept)


def _first_batch(it, args: TrainArgs):
  """The first batch of the stream, or a clear error when the task yields nothing."""
  try:
    return next(it)
  except StopIteration:
    raise ValueError(
        f"task {args.task!r} has no examples in its 'train' split at inputs_length="
        f"{args.inputs_length}, targets_length={args.targets_length} (empty source, or every "
        "example filtered out): nothing to train on") from None


def loss_positions_bucket(batch: Mapping[str, Any], bucket: int) -> Optional[int]:
  """How many positions the loss needs logits for: the batch's weighted positions rounded up
  to a multiple of `bucket` (None = all; `bucket` 0 turns the saving off).

  >>> import numpy as np
  >>> w = np.zeros((2, 192)); w[:, 100:] = 1           # 184 weighted positions of 384
  >>> loss_positions_bucket({"decoder_loss_weights": w}, 64)
  192
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if bucket <= 0:
    return None
  weights = batch.get("decoder_loss_weights")
  if weights is None:
    weights = batch["decoder_target_tokens"] > 0
  total = int(np.size(weights))
  needed = -(-int(np.count_nonzero(weights)) // bucket) * bucket
  return None if needed >= total else max(needed, bucket)


# -- the loop ----------------------------------------------------------------------------------

def _learning_curve(model_dir: str) -> Optional[str]:
  """PNG of loss (and learning rate) against step from train_metrics.jsonl; returns its path."""
  path = os.path.join(model_dir, METRICS_FILE)
  if not os.path.exists(path):
    return None
  rows = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line:
        r = json.loads(line)
        rows[r["step"]] = r  # a resumed run rewrites steps after its checkpoint: keep the last
  if not rows:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = sorted(rows)
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(steps, [rows[s]["loss"] for s in steps], label="train loss (targets)")
  ax.set_xlabel("step")
  ax.set_ylabel("cross-entropy per target token")
  ax.grid(alpha=0.3)
  ax2 = ax.twinx()
  ax2.plot(steps, [rows[s]["learning_rate"] for s in steps], color="tab:orange", alpha=0.5,
           label="learning rate")
  ax2.set_ylabel("learning rate")
  h1, l1 = ax.get_legend_handles_labels()
  h2, l2 = ax2.get_legend_handles_labels()
  ax.legend(h1 + h2, l1 + l2, loc="best", framealpha=0.8)
  ax.set_title(os.path.basename(os.path.normpath(model_dir)))
  fig.tight_layout()
  out = os.path.join(model_dir, CURVE_FILE)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out


def train(args: TrainArgs, *, model=None) -> TrainResult:
  """Runs (or resumes) a training run; returns where it ended. See the module docstring.

  `model` (a GemmaDecoderOnlyModel) overrides the one built from the config (tests use it).
  Raises TrainingDiverged on a NaN/inf loss, after writing nothing for the bad step, and
  CacheCorruptError naming the shard when a cached record does not read back.
  """
  from model.runner import inputs  # pylint: disable=g-import-not-at-top
  with inputs.naming_damaged_cache(args.task, "train", args.use_cached):
    return _train(args, model)


def _train(args: TrainArgs, model) -> TrainResult:
  """`train` (the run itself)."""
  t_start = time.time()
  from model.runner import inputs  # pylint: disable=g-import-not-at-top
  inputs.import_modules(args.module_imports)
  inputs.add_cache_dirs(args.cache_dirs)

  # pylint: disable-next=g-import-not-at-top
  from model.runner import t5x_checkpoints, train_checks, vocab_record

  # Everything that can be wrong with the flags, the task or the model dir is found before
  # anything is created: a refused run leaves no directory and no checkpoint manager behind.
  train_checks.check_args(args)
  import jax  # pylint: disable=g-import-not-at-top
  from model.runner import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh_lib.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                  auto=args.jax_distributed)
  plan = mesh_lib.MeshPlan.create(mesh_lib.MeshConfig.parse(args.mesh, fsdp=args.fsdp))
  primary = jax.process_index() == 0   # the one process that writes logs, JSON and curves
  # Recorded (and a resume invariant): the batches depend on it, not on the process count.
  args = dataclasses.replace(args, input_shards=args.input_shards or jax.process_count())
  my_shards = _input_shards(args, plan)
  model_dir = os.path.abspath(args.model_dir)
  train_checks.check_model_dir(model_dir)
  inputs.subtasks(args.task)   # an unknown name raises here, with close matches
  start_step, skipped_note = t5x_checkpoints.newest_complete(model_dir)
  start_step = start_step or 0
  vocab = vocab_record.describe(args.task)
  vocab_note = ""

  # Model config: the checkpoint's when resuming, else preset / HF checkpoint + overrides.
  hf_params = None
  if start_step:
    _check_resume_args(model_dir, args)
    vocab_note = vocab_record.check(model_dir, vocab, args.allow_vocabulary_change)
    args = _keep_recorded_model_flags(model_dir, args)
    cfg = load_model_config(model_dir)
  elif args.init_from_hf:
    from model.checkpoints import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
    cfg, hf_params = load_hf_checkpoint(args.init_from_hf)
    cfg = cfg.replace(dtype=args.dtype)
  else:
    cfg = build_model_config(args)
  vocab_size = inputs.max_vocab_size(args.task)
  if vocab_size and vocab_size > cfg.vocab_size:
    raise ValueError(
        f"task {args.task!r} uses a vocabulary of {vocab_size} ids but the model has "
        f"vocab_size={cfg.vocab_size}; set GEMMA_TOKENIZER_PATH to the tokenizer of the "
        "checkpoint (or --model_overrides vocab_size=...)")

  # This process's rows of every batch: its input shards' batches, one after the other.
  shard_count = args.input_shards
  streams = [inputs.train_batches(
      args.task, {"inputs": args.inputs_length, "targets": args.targets_length},
      batch_size=args.batch_size // shard_count, seed=args.seed, start_batch=start_step,
      pack=args.pack, packing=args.packing, use_cached=args.use_cached,
      shuffle_buffer_size=args.shuffle_buffer_size,
      shard=(i, shard_count) if shard_count > 1 else None).as_numpy_iterator()
             for i in my_shards]
  it = streams[0] if len(streams) == 1 else _stacked(streams)
  # A run whose schedule was fitted to its time budget continues to the length it was re-sized to.
  fitted = fitted_schedule(model_dir) if start_step else None
  total_steps, resized_at = fitted or (args.train_steps, None)
  last_stop = _stop_step(args, start_step, total_steps)
  batch = _first_batch(it, args) if start_step < last_stop else None

  # From here on the run dir is written (by the first process; orbax has every process write
  # its own shards of a checkpoint).
  os.makedirs(model_dir, exist_ok=True)
  if primary:
    if skipped_note:
      print(f"[train] {skipped_note}", flush=True)
    for bad in t5x_checkpoints.incomplete_steps(model_dir):
      if bad > start_step:   # this run will save that step again: keep the old one aside
        moved = t5x_checkpoints.set_aside(model_dir, bad)
        print(f"[train] moved the incomplete checkpoint_{bad} to {moved}", flush=True)
    if vocab_note:
      print(f"[train] {vocab_note}", flush=True)
      vocab_record.record(model_dir, vocab, replaced=vocab_record.recorded(model_dir))
    elif not start_step or vocab_record.recorded(model_dir) is None:
      vocab_record.record(model_dir, vocab)
    _write_json(os.path.join(model_dir, MODEL_CONFIG_FILE), config_to_json(cfg))
    _write_json(os.path.join(model_dir, TRAIN_ARGS_FILE), dataclasses.asdict(args))
    schedule_path = os.path.join(model_dir, SCHEDULE_FILE)
    if not start_step and os.path.exists(schedule_path):
      os.remove(schedule_path)   # a re-sized length belongs to the run that wrote it
  ckpt = t5x_checkpoints.T5XCheckpointManager(model_dir, keep=args.keep)
  try:
    return _run(args, cfg, model, ckpt, it, batch, start_step, (total_steps, resized_at),
                hf_params, t_start, plan, primary)
  finally:
    ckpt.close()


def _stop_step(args: TrainArgs, start_step: int, total_steps: int) -> int:
  """Where this invocation stops: the run's length, or sooner with --max_steps_per_run."""
  if args.max_steps_per_run:
    return min(total_steps, start_step + args.max_steps_per_run)
  return total_steps


def _run(args: TrainArgs, cfg, model, ckpt, it, batch, start_step: int, schedule_length,
         hf_params, t_start: float, plan, primary: bool) -> TrainResult:
  """The training loop of `train`, once the run dir, the checkpoints and the data are ready.
  `schedule_length`: (train_steps, resized_at) of `optim.schedule`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  from model.runner import optim, t5x_checkpoints  # pylint: disable=g-import-not-at-top
  from model.runner.interrupts import StopRequests  # pylint: disable=g-import-not-at-top
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # pylint: disable=g-import-not-at-top
  from model.runner.train_step import make_train_step  # pylint: disable=g-import-not-at-top

  model_dir = ckpt.model_dir
  model = model or GemmaDecoderOnlyModel(cfg, label_smoothing=args.label_smoothing)
  length = args.inputs_length + args.targets_length
  total_steps, resized_at = schedule_length
  last_stop = _stop_step(args, start_step, total_steps)

  # The schedule's length reaches the compiled step as values (`hyper`), so re-sizing the run
  # does not compile the step again (on a fast step, a compilation costs tens of steps).
  def hyper_of(total_steps, resized_at):
    start, progress = resized_at or (args.warmup_steps, 0.0)   # None: the plain schedule
    return {"total_steps": jnp.int32(total_steps), "resized_step": jnp.int32(start),
            "resized_progress": jnp.float32(progress)}

  def schedule_kw(hyper):
    return dict(total_steps=hyper["total_steps"], warmup_steps=args.warmup_steps,
                end_factor=args.end_lr_factor,
                resized_at=(hyper["resized_step"], hyper["resized_progress"]))

  def tx_of(hyper):
    return optim.adamw_with_clipping(args.learning_rate, weight_decay=args.weight_decay,
                                     clip_norm=args.clip_norm, b2=args.b2, **schedule_kw(hyper))

  def lr_fn_of(hyper):   # the rate the step applies, for the log
    return optim.schedule(args.learning_rate, **schedule_kw(hyper))

  hyper = hyper_of(total_steps, resized_at)
  tx, lr_fn = tx_of(hyper), lr_fn_of(hyper)
  root_rng = jax.random.PRNGKey(args.seed)
  init_rng, dropout_root = jax.random.split(root_rng)
  # Created sharded on the mesh (one device: the plain arrays of before).
  params, opt_state, param_sh, state_sh = plan.init(model, tx, init_rng, length)
  if hf_params is not None:
    params = plan.place(hf_params, param_sh)
  if start_step:
    params, opt_state, start_step = ckpt.restore(params, opt_state, start_step)
    params = plan.place(params, param_sh)
    opt_state = plan.place(opt_state, state_sh)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

  # One compilation per loss-position bucket (a handful: rows of one task carry similar shares
  # of target tokens).
  train_step = make_train_step(model, tx_of,
                               dropout_rng=dropout_root if cfg.dropout_rate > 0 else None,
                               out_shardings=(param_sh, state_sh, plan.replicated))

  writer = (tf.summary.create_file_writer(os.path.join(model_dir, "train")) if primary
            else tf.summary.create_noop_writer())
  metrics_path = os.path.join(model_dir, METRICS_FILE)
  if start_step and primary:
    # Drop rows a crashed run logged after its last checkpoint: they are recomputed now.
    _truncate_metrics(metrics_path, start_step)

  deadline = t_start + 60 * args.time_budget_minutes if args.time_budget_minutes else None

  if primary:
    print(f"[train] {args.task}: {cfg.num_layers} layers, d={cfg.embed_dim}, "
          f"{num_params / 1e6:.2f}M params, {args.batch_size} x {length} tokens per step, "
          f"steps {start_step} -> {last_stop} of {total_steps}"
          + (f" (resumed from checkpoint_{start_step})" if start_step else ""), flush=True)
  fit = deadline is not None and args.fit_schedule_to_budget
  step_times = collections.deque(maxlen=REFIT_WINDOW)   # end of each of the last steps
  bar = tqdm(total=total_steps, initial=start_step, disable=not (args.progress and primary),
             dynamic_ncols=True, desc="train", mininterval=1.0, file=sys.stdout)
  step = start_step
  window = _Window()
  stopped_early = False
  last_loss = None
  t_window = time.time()
  # SIGINT/SIGTERM end the loop after the current step; the step is saved below.
  with StopRequests() as stop:
    try:
      while step < last_stop:
        if deadline and time.time() > deadline:
          stopped_early = True
          break
        stopping, positions = _agree_across_processes(
            stop.requested, loss_positions_bucket(batch, args.loss_positions_bucket))
        if stopping:   # SIGINT/SIGTERM (on any process): save this step below, return
          break
        tokens = int(np.sum(batch["decoder_target_tokens"] > 0)) * jax.process_count()
        params, opt_state, metrics = train_step(params, opt_state, plan.global_batch(batch),
                                                jnp.int32(step), positions, hyper)
        # The step runs asynchronously: read the next batch meanwhile, then wait for the loss.
        batch = next(it) if step + 1 < last_stop else None
        loss = float(metrics["loss"])
        grad_norm = float(metrics["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
          saved = ckpt.latest_step()
          where = ("the last good checkpoint is "
                   f"{t5x_checkpoints.checkpoint_path(model_dir, saved)}"
                   if saved else "no checkpoint was written yet")
          raise TrainingDiverged(
              f"loss became {loss} (gradient norm {grad_norm}) at step {step + 1}; stopped without "
              f"saving; {where}. Try a lower --learning_rate, more --warmup_steps, a lower "
              f"--clip_norm or --dtype float32.")
        step += 1
        window.add(loss, float(metrics["accuracy"]), grad_norm, tokens)
        bar.update(1)
        step_times.append(time.time())
        if step % args.log_every == 0 or step == last_stop:
          now = time.time()
          row = window.flush(step, now - t_window, float(lr_fn(step - 1)))
          t_window = now
          last_loss = row["loss"]
          bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_second']:.0f}",
                          refresh=False)
          if primary:
            with open(metrics_path, "a", encoding="utf-8") as f:
              f.write(json.dumps(row) + "\n")
            with writer.as_default(step=step):
              for k in ("loss", "accuracy", "grad_norm", "learning_rate", "tokens_per_second"):
                tf.summary.scalar(f"train/{k}", row[k])
            writer.flush()
          if not args.progress and primary:
            print(f"[train] step {step}: loss {row['loss']:.4f} acc {row['accuracy']:.3f} "
                  f"{row['tokens_per_second']:.0f} tok/s", flush=True)
        # After the log row: it shows the rate this step used.
        if fit and step % args.log_every == 0:
          refit = _agree_on_total(refit_total_steps(
              step, total_steps, step_times, deadline - time.time(),
              args.warmup_steps,
              min_seconds_left=min(60.0, 6.0 * args.time_budget_minutes)))
          if refit:
            progress = float(optim.cosine_progress(
                step, total_steps=total_steps, warmup_steps=args.warmup_steps,
                resized_at=resized_at))
            old_total, total_steps = total_steps, refit
            resized_at = (step, progress) if step > args.warmup_steps else None
            hyper = hyper_of(total_steps, resized_at)
            lr_fn = lr_fn_of(hyper)
            last_stop = _stop_step(args, start_step, total_steps)
            if batch is None and step < last_stop:
              batch = next(it)
            bar.total = total_steps
            if primary:
              _write_json(os.path.join(model_dir, SCHEDULE_FILE),
                          {"train_steps": total_steps, "resized_at": resized_at})
              print(f"[train] step {step}: schedule re-sized from {old_total} to "
                    f"{total_steps} steps, the step time measured so far in the "
                    f"{(deadline - time.time()) / 60:.1f} min left", flush=True)
        if step % args.save_every == 0:
          ckpt.save(step, params, opt_state)
      if step > start_step or not ckpt.latest_step():
        ckpt.save(step, params, opt_state)
    finally:
      bar.close()
      writer.close()
      curve = _learning_curve(model_dir) if primary else None
  seconds = time.time() - t_start
  if stop.requested:
    print(f"[train] {stop.requested} received: stopped at step {step} and saved "
          f"{t5x_checkpoints.checkpoint_path(model_dir, step)}; run the same command to resume",
          flush=True)
  print(f"[train] step {step}/{total_steps} saved in {model_dir} "
        f"({seconds / 60:.1f} min{', stopped early' if stopped_early else ''})"
        + (f"; learning curve: {curve}" if curve else ""), flush=True)
  return TrainResult(step=step, loss=last_loss,
                     stopped_early=stopped_early or step < total_steps,
                     seconds=seconds, model_dir=model_dir, interrupted=stop.requested)


def _stacked(streams):
  """Batches of several input shards, stacked row-wise into one."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  for parts in zip(*streams):
    yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _input_shards(args: TrainArgs, plan) -> List[int]:
  """The input shards this process reads (their batches, stacked, are its rows of a batch).

  A batch is made of `input_shards` equal parts (default: one per process), so a run gives
  the same batches on any number of processes: 2 processes reading a shard each feed the rows
  that one process reading both shards would.
  """
  import jax  # pylint: disable=g-import-not-at-top
  processes = jax.process_count()
  count = args.input_shards or processes
  if count < 1 or count % processes:
    raise ValueError(f"--input_shards {count} must be a multiple of the {processes} processes")
  if args.batch_size % count or args.batch_size % plan.data_size:
    raise ValueError(f"--batch_size {args.batch_size} must be a multiple of --input_shards "
                     f"({count}) and of the mesh's data axis ({plan.data_size})")
  per_process = count // processes
  return list(range(jax.process_index() * per_process, (jax.process_index() + 1) * per_process))


def refit_total_steps(step: int, total_steps: int, step_times: Sequence[float],
                      seconds_left: float, warmup_steps: int, *, min_steps: int = 50,
                      tolerance: float = 0.03, min_seconds_left: float = 60.0) -> Optional[int]:
  """The run's new length when the step time measured so far (`step_times`: the end times of
  the last steps, `REFIT_WINDOW` in the trainer) says the time left holds a number of steps more
  than `tolerance` off the plan; else None. Not in the last `min_seconds_left` (the trainer:
  a minute, or a tenth of a shorter budget; the end is near enough), and not on fewer than
  `min_steps` measured steps.

  Steps over 3x the median are left out of the mean: they are compilations (a new loss-position
  bucket), which happen once, not at every step to come.

  >>> ends = [10.0 + 0.5 * i for i in range(51)]                  # 0.5 s per step
  >>> refit_total_steps(100, 1000, ends, seconds_left=300.0, warmup_steps=50)   # 600 more fit
  700
  >>> refit_total_steps(100, 710, ends, seconds_left=300.0, warmup_steps=50) is None  # 1.4% off
  True
  >>> ends[30:] = [t + 4.0 for t in ends[30:]]                    # one step compiled for 4 s
  >>> refit_total_steps(100, 1000, ends, seconds_left=300.0, warmup_steps=50)
  700
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if len(step_times) < min_steps + 1 or seconds_left < min_seconds_left:
    return None
  durations = np.diff(np.asarray(step_times, np.float64))
  usual = durations[durations <= 3 * np.median(durations)]
  seconds_per_step = float(usual.mean()) if usual.size else 0.0
  if seconds_per_step <= 0:
    return None
  total = max(step + int(seconds_left / seconds_per_step), warmup_steps + 1, step + 1)
  return total if abs(total - total_steps) > tolerance * total_steps else None


def _agree_on_total(total: Optional[int]) -> Optional[int]:
  """Process 0's decision, on every process (their clocks differ; their programs must not)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return total
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  agreed = int(multihost_utils.broadcast_one_to_all(np.int64(total or 0)))
  return agreed or None


def fitted_schedule(model_dir: str) -> Optional[Tuple[int, Optional[Tuple[int, float]]]]:
  """(train_steps, resized_at) of a run whose schedule was re-sized, else None."""
  path = os.path.join(model_dir, SCHEDULE_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  resized_at = saved.get("resized_at")
  return int(saved["train_steps"]), (tuple(resized_at) if resized_at else None)


def _agree_across_processes(stop_requested, positions: Optional[int]):
  """(stop, loss positions) that every process agrees on, in one all-gather per step: a stop
  requested on one process stops all of them, and all compile the same program (the largest
  loss-position bucket; None, every position, if any process needs it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return bool(stop_requested), positions
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  mine = np.asarray([1 if stop_requested else 0, -1 if positions is None else positions])
  every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2)
  return bool(every[:, 0].any()), (None if (every[:, 1] < 0).any() else int(every[:, 1].max()))


class _Window:
  """Running sums between two log lines."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.n = 0
    self.loss = self.acc = self.grad_norm = 0.0
    self.tokens = 0

  def add(self, loss, acc, grad_norm, tokens):
    self.n += 1
    self.loss += loss
    self.acc += acc
    self.grad_norm += grad_norm
    self.tokens += tokens

  def flush(self, step, seconds, lr):
    n = max(self.n, 1)
    row = {"step": step, "loss": self.loss / n, "accuracy": self.acc / n,
           "grad_norm": self.grad_norm / n, "learning_rate": lr,
           "tokens_per_second": self.tokens / max(seconds, 1e-9), "time": time.time()}
    self.reset()
    return row


def _truncate_metrics(path: str, max_step: int) -> None:
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    keep = [line for line in f if line.strip() and json.loads(line)["step"] <= max_step]
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(keep)
  os.replace(path + ".tmp", path)


# -- CLI ---------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> TrainArgs:
  """The `TrainArgs` of a command line (`gemma_seqio.flags`: one flag per field).

  >>> parse_args(["--task", "t", "--model_dir", "d", "--model_overrides", "num_layers=3",
  ...             "--cache_dirs", "a", "b", "--no_pack"]).model_overrides
  {'num_layers': '3'}
  """
  return flags.parse(TrainArgs, argv, prog="python -m model.runner.train",
                     description="Train a Gemma on a SeqIO task or mixture; T5X-layout orbax "
                                 "checkpoints, resumable, NaN-safe.")


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  from gemma_seqio import cli_log, malloc_settings  # pylint: disable=g-import-not-at-top
  malloc_settings.keep_freed_memory()   # before JAX and TensorFlow start their threads
  # Before TensorFlow loads: library output goes to <model_dir>/train.log, ours to the terminal.
  with cli_log.to_log_file(args.model_dir, "train") as log:
    log.exit_code = _main(args)
  return log.exit_code


def _main(args: TrainArgs) -> int:
  failed = 0
  try:
    result = train(args)
  except TrainingDiverged as e:
    print(f"[train] ERROR: {e}", file=sys.stderr, flush=True)
    failed = 1
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"[train] ERROR: {e}", file=sys.stderr, flush=True)
    failed = 2
  if failed:
    # The failed run's objects (its tf.data iterator among them, held by the traceback's
    # frames) are freed here, with TensorFlow alive, not by the interpreter's last garbage
    # collection: after a corrupt shard's DataLossError that one hung the process in 2 runs of
    # 20 (error printed, no exit); with this collection 0 of 24.
    gc.collect()
    return failed
  if result.interrupted:
    # The shell's convention for "ended by signal N" (130 for Ctrl-C, 143 for SIGTERM), so a
    # scheduler sees an unfinished run; the checkpoint is on disk all the same.
    return 128 + int(signal.Signals[result.interrupted])
  return 0


if __name__ == "__main__":
  sys.exit(main())
