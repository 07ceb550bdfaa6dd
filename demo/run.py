"""placeholder until the demo lands"""
import argparse
import sys


def main(argv=None):
  argparse.ArgumentParser(prog="python -m demo.run").parse_args(argv)
  return 0


if __name__ == "__main__":
  sys.exit(main())
