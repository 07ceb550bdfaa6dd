"""Mixing rates: UniMax (uniform budget with a per-task epoch cap).

UniMax (Chung et al., 2023, "UniMax: Fairer and More Effective Language Sampling") spends a
total budget as evenly as possible over tasks, but never more than `max_epochs` epochs of any
one task; what a small task cannot use goes to the larger ones. Sizes and budget are in the
same unit (examples here; tokens work as well).

>>> unimax_rates({"small": 100, "mid": 1_000, "big": 10_000}, budget=3_000, max_epochs=2)
{'small': 200.0, 'mid': 1400.0, 'big': 1400.0}
"""
from __future__ import annotations

from typing import Dict, Mapping


def unimax_rates(sizes: Mapping[str, float], *, budget: float, max_epochs: float) -> Dict[str, float]:
  """Per-task allocation (usable directly as seqio mixing rates; seqio normalises them).

  Tasks are visited from the smallest to the largest; each gets an equal share of what is left
  of the budget, capped at `max_epochs * size`.
  """
  if budget <= 0 or max_epochs <= 0:
    raise ValueError(f"unimax_rates: budget and max_epochs must be > 0, got {budget}, {max_epochs}")
  empty = [n for n, s in sizes.items() if s <= 0]
  if empty:
    raise ValueError(f"unimax_rates: tasks with no examples: {empty}")
  order = sorted(sizes, key=lambda n: (sizes[n], n))
  left = float(budget)
  out = {}
  for i, name in enumerate(order):
    share = left / (len(order) - i)
    out[name] = min(share, max_epochs * float(sizes[name]))
    left -= out[name]
  return {n: out[n] for n in sizes}
