"""gemma_seqio.flags: a run's frozen dataclass is its CLI."""
import dataclasses
from typing import Mapping, Optional, Tuple

import pytest

from gemma_seqio import flags


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
  task: str = flags.option(help="task")
  steps: int = flags.option(10, help="steps")
  budget: Optional[float] = flags.option(None, help="minutes")
  progress: bool = flags.option(True, help="bars")
  dirs: Tuple[str, ...] = flags.option(("a",), help="dirs")
  overrides: Mapping[str, str] = flags.option({}, help="fields")


def test_every_field_is_a_flag_of_the_same_name():
  run = flags.parse(Run, ["--task", "t", "--steps", "3", "--budget", "1.5", "--no_progress",
                          "--dirs", "x", "y", "--dirs", "z", "--overrides", "a=1",
                          "--overrides", "b=c=d"])
  assert run == Run(task="t", steps=3, budget=1.5, progress=False, dirs=("x", "y", "z"),
                    overrides={"a": "1", "b": "c=d"})


def test_defaults_and_round_trip():
  assert flags.parse(Run, ["--task", "t"]) == Run(task="t")
  run = Run(task="t", steps=7, progress=False, dirs=(), overrides={"n": "2"})
  assert flags.parse(Run, flags.to_argv(run)) == run
  assert Run(task="t").overrides is not Run(task="u").overrides   # no shared mutable default


@pytest.mark.parametrize("argv, said", [
    ([], "the following arguments are required: --task"),
    (["--task", "t", "--steps", "x"], "--steps: invalid int value: 'x'"),
    (["--task", "t", "--overrides", "novalue"], "--overrides 'novalue': expected KEY=VALUE"),
    (["--task", "t", "--progress", "--no_progress"], "not allowed with argument"),
])
def test_bad_flags_are_usage_errors_naming_the_flag(argv, said, capsys):
  with pytest.raises(SystemExit) as e:
    flags.parse(Run, argv)
  assert e.value.code == 2
  assert said in capsys.readouterr().err


def test_train_and_evaluate_settings_round_trip_through_their_flags():
  from model.runner import evaluate, import_hf, train
  args = train.TrainArgs(task="t", model_dir="d", model_overrides={"num_layers": "3"},
                         cache_dirs=("a", "b"), pack=False, time_budget_minutes=2.5)
  assert train.parse_args(flags.to_argv(args)) == args
  ev = evaluate.EvalArgs(checkpoint_dir="c", task="t", module_imports=("m",), beam_size=4)
  assert evaluate.parse_args(flags.to_argv(ev)) == ev
  imp = import_hf.ImportArgs(hf_dir="h", model_dir="d")
  assert flags.parse(import_hf.ImportArgs, flags.to_argv(imp)) == imp
  with pytest.raises(dataclasses.FrozenInstanceError):
    args.train_steps = 5
