"""demo.run: an explicit --budget_minutes wins over --recipe's defaults."""
import pytest


def _plan(argv, elapsed_minutes=0.0):
  from demo import run
  ns = run.build_parser().parse_args(argv)
  return run.plan_minutes(ns.budget_minutes, ns.recipe, elapsed_minutes)


def test_recipe_defaults_to_45_minutes_with_30_of_training():
  assert _plan(["--recipe"]) == (45.0, 30.0)


def test_explicit_budget_wins_over_the_recipe():
  budget, train_minutes = _plan(["--recipe", "--budget_minutes", "15"])
  assert budget == 15.0
  assert train_minutes <= 15.0 * 0.7   # training leaves the evaluation its reserve


def test_explicit_default_value_is_still_explicit():
  # 15 is also the plain default: given explicitly with --recipe it must not become 45.
  assert _plan(["--recipe", "--budget_minutes", "15.0"])[0] == 15.0
  assert _plan(["--budget_minutes", "45"], elapsed_minutes=3) == (45.0, 45.0 * 0.7 - 3)
  assert _plan([]) == (15.0, 15.0 * 0.7)


def test_bad_budget_is_refused(capsys):
  from demo import run
  with pytest.raises(ValueError, match="--budget_minutes must be > 0, got 0"):
    _plan(["--budget_minutes", "0"])
  assert run.main(["--budget_minutes", "-5", "--out", "/nonexistent/never"]) == 2
  assert "--budget_minutes must be > 0" in capsys.readouterr().err
