"""Average the parameters of a run's last checkpoints: `python -m model.runner.average_checkpoints`.

    python -m model.runner.average_checkpoints --model_dir runs/ende --last 4 --out_dir runs/ende_avg

writes a run dir that every tool opens like the run itself:

    runs/ende_avg/checkpoint_<newest step>/state   T5X's train state: the mean of the parameters
                                                   of the last 4 complete checkpoints, with the
                                                   newest one's optimizer state and step
    runs/ende_avg/model_config.json, vocabulary.json, train_args.json   copied from the run
    runs/ende_avg/averaged.json                    which checkpoints went into the mean

(`model.runner.evaluate --checkpoint_dir runs/ende_avg`, `model.chat`, `t5x.eval` with
`CHECKPOINT_PATH` on it). Averaging the checkpoints of the end of a run (Vaswani et al. 2017, the
`avg_checkpoints` of tensor2tensor and fairseq) smooths out the noise of the last updates; how
much it gives after a schedule that has already decayed is measured in README (quality levers).

Checkpoints of different models (another shape, parameter set or dtype) are refused, naming the
parameter and the two checkpoints. The mean is taken in float64 and stored in each parameter's
own dtype.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from typing import List, Optional, Sequence

import numpy as np

from gemma_seqio import flags
from gemma_seqio.flags import option

AVERAGED_FILE = "averaged.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AverageArgs:
  """The flags of `python -m model.runner.average_checkpoints` (one per field)."""
  model_dir: str = option(help="a model.runner.train (or t5x.train) run dir with checkpoints")
  out_dir: str = option(help="the new run dir (must hold no checkpoint)")
  last: int = option(4, help="average this many of the newest complete checkpoints")


def mean_params(trees: Sequence[dict], names: Sequence[str]) -> dict:
  """The element-wise mean of parameter trees of one model; `names` say which checkpoint each
  tree is in the errors.

  >>> a = {"w": np.array([1.0, 2.0], np.float32), "norm": {"scale": np.zeros(2, np.float32)}}
  >>> b = {"w": np.array([3.0, 6.0], np.float32), "norm": {"scale": np.ones(2, np.float32)}}
  >>> m = mean_params([a, b], ["checkpoint_10", "checkpoint_20"])
  >>> m["w"].tolist(), m["norm"]["scale"].tolist(), m["w"].dtype
  ([2.0, 4.0], [0.5, 0.5], dtype('float32'))
  >>> mean_params([a, {"w": np.zeros(3, np.float32), "norm": b["norm"]}], ["checkpoint_10", "checkpoint_20"])
  Traceback (most recent call last):
  ValueError: parameter w is float32 (2,) in checkpoint_10 but float32 (3,) in checkpoint_20
  """
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flats = [traverse_util.flatten_dict(t) for t in trees]
  first = flats[0]
  for flat, name in zip(flats[1:], names[1:]):
    if set(flat) != set(first):
      extra = sorted("/".join(p) for p in set(flat) ^ set(first))
      raise ValueError(f"{names[0]} and {name} hold different parameters: {extra[:5]}")
    for path, value in flat.items():
      ref = first[path]
      if value.shape != ref.shape or value.dtype != ref.dtype:
        raise ValueError(f"parameter {'/'.join(path)} is {ref.dtype} {ref.shape} in {names[0]} "
                         f"but {value.dtype} {value.shape} in {name}")
  mean = {path: (sum(f[path].astype(np.float64) for f in flats) / len(flats)).astype(ref.dtype)
          for path, ref in first.items()}
  return traverse_util.unflatten_dict(mean)


def average(model_dir: str, out_dir: str, last: int) -> str:
  """Writes the average of the last `last` checkpoints of `model_dir` into `out_dir`; returns
  the written checkpoint's path."""
  from model.runner import t5x_checkpoints, train, vocab_record  # pylint: disable=g-import-not-at-top
  if last < 1:
    raise ValueError(f"--last must be at least 1, got {last}")
  steps = t5x_checkpoints.all_steps(model_dir)
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint_<step> in {model_dir}")
  if len(steps) < last:
    raise ValueError(f"{model_dir} has {len(steps)} complete checkpoints ({steps}), fewer than "
                     f"--last {last}; train with a larger --keep or average fewer")
  if t5x_checkpoints.all_steps(out_dir) or t5x_checkpoints.incomplete_steps(out_dir):
    raise FileExistsError(f"{out_dir} already holds checkpoints; choose an empty --out_dir")
  chosen: List[int] = steps[-last:]
  raws = []
  for step in chosen:
    print(f"[average] reading checkpoint_{step}", flush=True)
    raws.append(t5x_checkpoints.restore_state_dict(t5x_checkpoints.checkpoint_path(model_dir, step)))
  params = mean_params([r["target"] for r in raws], [f"checkpoint_{s}" for s in chosen])
  newest = raws[-1]
  os.makedirs(out_dir, exist_ok=True)
  for name in (train.MODEL_CONFIG_FILE, vocab_record.VOCABULARY_FILE, train.TRAIN_ARGS_FILE):
    if os.path.exists(os.path.join(model_dir, name)):
      shutil.copyfile(os.path.join(model_dir, name), os.path.join(out_dir, name))
  manager = t5x_checkpoints.T5XCheckpointManager(out_dir, keep=None)
  try:
    manager.save_state_dict(chosen[-1], {"target": params, "state": newest["state"]})
  finally:
    manager.close()
  with open(os.path.join(out_dir, AVERAGED_FILE), "w", encoding="utf-8") as f:
    json.dump({"model_dir": os.path.abspath(model_dir), "steps": chosen}, f, indent=2)
    f.write("\n")
  return t5x_checkpoints.checkpoint_path(out_dir, chosen[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = flags.parse(AverageArgs, argv, prog="python -m model.runner.average_checkpoints",
                     description=__doc__.splitlines()[0])
  try:
    path = average(args.model_dir, args.out_dir, args.last)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"[average] ERROR: {e}", file=sys.stderr)
    return 2
  print(f"[average] wrote {path}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
