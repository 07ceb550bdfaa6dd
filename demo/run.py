"""placeholder until the demo lands"""
import argparse
import sys

# The model of the demo and of the quality recipe (TrainArgs fields); model/configs/gemma_small.gin
# describes the same shape for T5X.
RECIPE_MODEL = dict(preset="small_gemma2", model_overrides={
    "embed_dim": "128", "hidden_dim": "512", "num_layers": "4", "head_dim": "32",
    "query_pre_attn_scalar": "32"})


def main(argv=None):
  argparse.ArgumentParser(prog="python -m demo.run").parse_args(argv)
  return 0


if __name__ == "__main__":
  sys.exit(main())
