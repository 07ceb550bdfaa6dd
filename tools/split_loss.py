"""Loss of a checkpoint on the answer tokens of several splits: how far training and held-out
examples are apart (a diagnostic for recipes; nothing here is imported by the package).

    python tools/split_loss.py --checkpoint_dir <demo out>/model --task gemma_en_de_libreoffice \\
        --splits train validation --examples 1400

The first `--examples` examples of each split, in file order, packed into rows of the recipe's
shape (96 + 96 tokens, best-fit) with the Gemma PrefixLM converter, scored by the model's own
loss (`GemmaDecoderOnlyModel.weighted_loss`, no dropout, no label smoothing): the mean
cross-entropy per answer token.
"""
import argparse
import sys


def split_loss(checkpoint_dir: str, task: str, split: str, examples: int,
               inputs_length: int = 96, targets_length: int = 96, batch_size: int = 16) -> dict:
  """{"loss": mean cross-entropy per answer token, "tokens": answer tokens scored, "step": ...}."""
  import jax  # pylint: disable=g-import-not-at-top
  import gemma_tasks  # pylint: disable=g-import-not-at-top
  from model.runner import evaluate, inputs  # pylint: disable=g-import-not-at-top
  model, params, step = evaluate.load_checkpoint(checkpoint_dir)
  scalars = jax.jit(lambda p, b: model.weighted_loss(p, b, None)[1])
  lengths = {"inputs": inputs_length, "targets": targets_length}
  ds = gemma_tasks.get_task_or_mixture(task).get_dataset(
      lengths, split=split, shuffle=False, num_epochs=1).take(examples)
  ds = inputs.feature_converter(pack=True, packing="best_fit")(ds, lengths).batch(batch_size)
  total = weight = 0.0
  for batch in ds.as_numpy_iterator():
    out = scalars(params, batch)
    # `loss` is the mean over the batch's answer tokens: weight it back to a sum.
    total += float(out["loss"]) * float(out["weight_sum"])
    weight += float(out["weight_sum"])
  return {"loss": total / max(weight, 1.0), "tokens": int(weight), "step": step}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint_dir", required=True)
  p.add_argument("--task", default="gemma_en_de_libreoffice")
  p.add_argument("--splits", nargs="+", default=["train", "validation"])
  p.add_argument("--examples", type=int, default=1400, help="first N examples of each split")
  args = p.parse_args(argv)
  for split in args.splits:
    r = split_loss(args.checkpoint_dir, args.task, split, args.examples)
    print(f"{args.task} {split}: loss {r['loss']:.3f} per answer token over {r['tokens']} tokens "
          f"(first {args.examples} examples, step {r['step']})", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
