"""Checks of `model.runner.train`'s flags, run before anything is created or compiled.

A bad value must stop the run with a message naming the flag, not after a step ran (a
ZeroDivisionError at the first save), and not by training the wrong way (a negative learning
rate is gradient ascent). Nothing here imports TF or JAX.

>>> import tempfile
>>> from model.runner.train import TrainArgs
>>> check_args(TrainArgs(task="t", model_dir="d", learning_rate=-1))
Traceback (most recent call last):
ValueError: --learning_rate must be > 0, got -1
>>> with tempfile.NamedTemporaryFile(suffix=".txt") as f:
...   check_model_dir(f.name)
Traceback (most recent call last):
ValueError: --model_dir /tmp/....txt is a file, not a directory
"""
from __future__ import annotations

import math
import os
from typing import List


def _positive(name: str, value) -> List[str]:
  ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
  return [] if ok else [f"--{name} must be > 0, got {value}"]


def _at_least(name: str, value, low: int) -> List[str]:
  return [] if value >= low else [f"--{name} must be >= {low}, got {value}"]


def problems(args) -> List[str]:
  """Every problem of a `TrainArgs`, one message each ([] when all is well).

  >>> from model.runner.train import TrainArgs
  >>> problems(TrainArgs(task="t", model_dir="d", save_every=0, clip_norm=0))
  ['--clip_norm must be > 0, got 0', '--save_every must be >= 1, got 0']
  """
  out = []
  out += _at_least("train_steps", args.train_steps, 1)
  out += _at_least("batch_size", args.batch_size, 1)
  if args.inputs_length + args.targets_length < 1:
    out.append(f"--inputs_length + --targets_length must be >= 1 (a row needs tokens), got "
               f"{args.inputs_length} + {args.targets_length}")
  else:
    out += _at_least("inputs_length", args.inputs_length, 0)
    # A row with no room for targets has nothing to learn from (the loss is on targets only).
    out += _at_least("targets_length", args.targets_length, 1)
  out += _positive("learning_rate", args.learning_rate)
  out += _at_least("warmup_steps", args.warmup_steps, 0)
  if not 0 <= args.end_lr_factor <= 1:
    out.append(f"--end_lr_factor must be in [0, 1], got {args.end_lr_factor}")
  if not args.weight_decay >= 0:
    out.append(f"--weight_decay must be >= 0, got {args.weight_decay}")
  out += _positive("clip_norm", args.clip_norm)
  if not 0 <= args.b2 < 1:
    out.append(f"--b2 must be in [0, 1), got {args.b2}")
  if not 0 <= args.label_smoothing < 1:
    out.append(f"--label_smoothing must be in [0, 1), got {args.label_smoothing}")
  out += _at_least("loss_positions_bucket", args.loss_positions_bucket, 0)
  out += _at_least("save_every", args.save_every, 1)
  out += _at_least("keep", args.keep, 1)
  out += _at_least("log_every", args.log_every, 1)
  if args.max_steps_per_run is not None:
    out += _at_least("max_steps_per_run", args.max_steps_per_run, 1)
  if args.time_budget_minutes is not None:
    out += _positive("time_budget_minutes", args.time_budget_minutes)
  return out


def check_args(args) -> None:
  """Raises ValueError with every problem of `args` (see `problems`)."""
  found = problems(args)
  if found:
    raise ValueError("; ".join(found))


def check_model_dir(model_dir: str) -> None:
  """A model dir must be a directory or not exist yet (its parent may be created)."""
  path = os.path.abspath(model_dir)
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      return
    path = parent
  if not os.path.isdir(path):
    if path == os.path.abspath(model_dir):
      raise ValueError(f"--model_dir {model_dir} is a file, not a directory")
    raise ValueError(f"--model_dir {model_dir}: {path} is a file, not a directory")
