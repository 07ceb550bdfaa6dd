"""Command line: list the registered tasks and mixtures, show examples of one.

    python -m gemma_tasks list
    python -m gemma_tasks show gemma_en_de_libreoffice --split validation -n 3
    python -m gemma_tasks demo            # every embedded task: examples and split counts
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _count(text: str) -> int:
  """argparse type of -n: a whole number >= 1 (argparse names the option in its error).

  >>> _count("3")
  3
  >>> _count("-1")
  Traceback (most recent call last):
  argparse.ArgumentTypeError: must be a whole number of at least 1, got '-1'
  """
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
  return value


def _is_tfds(task) -> bool:
  import seqio  # noqa: PLC0415 - heavy import only after argument parsing
  return isinstance(task.source, seqio.TfdsDataSource)


def _tfds_ready(task) -> bool:
  try:
    task.source.list_shards(task.splits[0])
    return True
  except Exception:  # pylint: disable=broad-except
    return False


def cmd_list(_args) -> int:
  import seqio
  import gemma_tasks  # noqa: F401 - registers the tasks
  for name in sorted(seqio.TaskRegistry.names()):
    if not name.startswith("gemma_"):
      continue
    task = seqio.TaskRegistry.get(name)
    kind = "tfds " if _is_tfds(task) else "jsonl"
    print(f"task     {name:32s} {kind} splits={','.join(task.splits)}")
  for name in sorted(seqio.MixtureRegistry.names()):
    if name.startswith("gemma_"):
      mix = seqio.MixtureRegistry.get(name)
      print(f"mixture  {name:32s} tasks={','.join(t.name for t in mix.tasks)}")
  return 0


def cmd_show(args) -> int:
  import gemma_tasks  # noqa: F401
  from gemma_tasks import inspect_tasks
  for line in inspect_tasks.describe_examples(args.task, split=args.split, n=args.n):
    print(line)
  return 0


def cmd_demo(args) -> int:
  import seqio
  import gemma_tasks  # noqa: F401
  from gemma_tasks import inspect_tasks
  for name in sorted(n for n in seqio.TaskRegistry.names() if n.startswith("gemma_")):
    task = seqio.TaskRegistry.get(name)
    if _is_tfds(task) and not _tfds_ready(task):
      print(f"=== {name}: TFDS data {task.source.tfds_dataset.name} is not prepared locally "
            "(it cannot be downloaded here); skipped. Its pipeline is tested on TFDS mock data.")
      continue
    print(f"=== {name}  examples per split: {inspect_tasks.split_counts(name)}")
    split = "validation" if "validation" in task.splits else task.splits[0]
    for line in inspect_tasks.describe_examples(name, split=split, n=args.n):
      print(line)
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gemma_tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="registered gemma tasks and mixtures").set_defaults(fn=cmd_list)
  show = sub.add_parser("show", help="examples of one task")
  show.add_argument("task")
  show.add_argument("--split", default="validation")
  show.add_argument("-n", type=_count, default=3, help="examples to show (>= 1)")
  show.set_defaults(fn=cmd_show)
  demo = sub.add_parser("demo", help="examples and counts of every task")
  demo.add_argument("-n", type=_count, default=2, help="examples per task (>= 1)")
  demo.set_defaults(fn=cmd_demo)
  args = parser.parse_args(argv)
  from gemma_seqio import cli_log  # pylint: disable=g-import-not-at-top
  # Library output (TF start-up, SentencePiece per vocabulary load) to a temporary log, kept
  # and named only if the command fails.
  with cli_log.to_log_file(None, "gemma_tasks") as log:
    log.exit_code = _run(args)
  return log.exit_code


def _run(args) -> int:
  try:
    return args.fn(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
