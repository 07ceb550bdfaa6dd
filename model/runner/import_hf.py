"""Convert a Hugging Face Gemma checkpoint into a T5X checkpoint: `python -m model.runner.import_hf`.

    python -m model.runner.import_hf --hf_dir gemma-2-2b --model_dir runs/gemma2_2b_init

writes

    runs/gemma2_2b_init/checkpoint_0/state    T5X's train state: the parameters and a fresh
                                              optimizer state of `model.runner.optim` (step 0)
    runs/gemma2_2b_init/model_config.json     the GemmaConfig (from the HF config.json)

so that `t5x.train` fine-tunes it (`--gin.INITIAL_CHECKPOINT_PATH=\\"runs/gemma2_2b_init/checkpoint_0\\"`,
see `model/runner/configs/gemma2_2b_finetune.gin`) and `model.runner.evaluate` / `model.chat` open it.

The optimizer state is the zero state of `optim.adamw_with_clipping`, whose layout does not
depend on the learning-rate schedule: T5X restores it under any schedule the gin file sets.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

from gemma_seqio import flags
from gemma_seqio.flags import option


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImportArgs:
  """The flags of `python -m model.runner.import_hf` (one per field, `gemma_seqio.flags`)."""
  hf_dir: str = option(help="a GemmaForCausalLM / Gemma2ForCausalLM save_pretrained directory")
  model_dir: str = option(help="where checkpoint_0 is written")


def import_hf(hf_dir: str, model_dir: str) -> str:
  """Writes `<model_dir>/checkpoint_0` from a `save_pretrained` directory; returns its path."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from model.runner import optim, t5x_checkpoints, train  # pylint: disable=g-import-not-at-top
  from model.checkpoints import load_hf_checkpoint  # pylint: disable=g-import-not-at-top

  if t5x_checkpoints.all_steps(model_dir):
    raise FileExistsError(f"{model_dir} already holds checkpoints "
                          f"{t5x_checkpoints.all_steps(model_dir)}; choose an empty --model_dir")
  cfg, params = load_hf_checkpoint(hf_dir)
  params = jax.tree.map(jnp.asarray, params)
  opt_state = optim.adamw_with_clipping(total_steps=1).init(params)
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, train.MODEL_CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(train.config_to_json(cfg), f, indent=2, sort_keys=True)
  manager = t5x_checkpoints.T5XCheckpointManager(model_dir, keep=None)
  try:
    manager.save(0, params, opt_state)
  finally:
    manager.close()
  return t5x_checkpoints.checkpoint_path(model_dir, 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = flags.parse(ImportArgs, argv, prog="python -m model.runner.import_hf",
                     description=__doc__.splitlines()[0])
  try:
    path = import_hf(args.hf_dir, args.model_dir)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"[import_hf] ERROR: {e}", file=sys.stderr)
    return 2
  print(f"[import_hf] wrote {path}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
