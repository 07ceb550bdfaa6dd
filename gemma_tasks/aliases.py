"""The training target of a QA example: the alias most like the others, for a whole batch at once.

An answer comes as an unordered alias list ("Francis Ford Coppola", "Ff coppola", ...); training
needs one string. Each alias scores the sum of its SQuAD token F1 with every other alias of its
list; aliases with parentheses ("BH (disambiguation)") or nothing left after normalisation score
0. The highest score wins, then the shorter alias, then the first in list order:

>>> pick_aliases([["Ff coppola", "Francis Ford Coppola", "Coppola, Francis Ford", "Ford coppola"],
...               ["🚁", "Helicopters", "Helicopter", "Cargo helicopter", "Copter"], ["Ni"]])
['Francis Ford Coppola', 'Helicopter', 'Ni']

TriviaQA has lists of up to ~400 aliases, so the pairwise F1 is quadratic: scored pair by pair
in Python it cost ~300 us per TriviaQA example, the whole data path's bottleneck. Here a batch
of lists is scored with a few numpy calls: the aliases of a batch are normalised in one string,
only pairs that share a token are scored (any other pair adds 0.0), F1 uses the same float
operations as `metrics.bag_f1`, and each alias's score is summed left to right as Python's `sum`
does, so ties break exactly as in the plain definition (`benchmarks/per_example_steps
.pick_alias`, compared on every embedded alias list in the tests).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from gemma_tasks import metrics

# Joins a batch's aliases so that they are decoded and normalised in one call each: neither
# lower-casing, punctuation, articles (`\b` treats it as a string end) nor `str.split` touch it.
_SEP = "\x00"


def pick_alias(aliases: Sequence[str]) -> str:
  """The training target of one alias list (see the module docstring).

  >>> pick_alias(["Bh.", "BH (disambiguation)", "BH", "Bh", "B.H."])
  'BH'
  """
  if not aliases:
    raise ValueError("pick_alias: no aliases")
  return pick_aliases([aliases])[0]


def pick_aliases(lists: Sequence[Sequence[str]]) -> List[str]:
  """`pick_alias` of each list, in order; every list must have at least one alias."""
  flat = [alias for aliases in lists for alias in aliases]
  starts = np.cumsum([0] + [len(aliases) for aliases in lists])
  return [flat[i] for i in pick_indices(flat, starts)]


def pick_utf8(values: Sequence[bytes], row_splits: Sequence[int]) -> List[bytes]:
  """`pick_aliases` of the rows of a ragged matrix of UTF-8 aliases, as the original bytes."""
  joined = _SEP.encode().join(values)
  if joined.count(_SEP.encode()) == len(values) - 1:   # one decode call for the whole batch
    texts = joined.decode("utf-8").split(_SEP)
  else:   # an alias holds the separator itself
    texts = [v.decode("utf-8") for v in values]
  return [values[i] for i in pick_indices(texts, row_splits)]


def pick_indices(flat: Sequence[str], row_splits: Sequence[int]) -> List[int]:
  """Index into `flat` of the winner of each list `flat[row_splits[e]:row_splits[e + 1]]`."""
  splits = np.asarray(row_splits, dtype=np.int64)
  lengths = np.diff(splits)
  if (lengths < 1).any():
    raise ValueError(f"pick_aliases: alias list {int(np.argmax(lengths < 1))} is empty")
  if (lengths == 1).all():
    return splits[:-1].tolist()
  list_of = np.repeat(np.arange(len(lengths)), lengths)           # alias -> its list
  score = _scores(flat, list_of)
  length = np.array([len(alias) for alias in flat])
  # Per list: the highest score, then the shortest, then the first. Sorting keeps each list's
  # aliases where the list was, so the winner of list e is at position splits[e].
  order = np.lexsort((np.arange(len(flat)), length, -score, list_of))
  return order[splits[:-1]].tolist()


def _scores(flat: Sequence[str], list_of: np.ndarray) -> np.ndarray:
  """Each alias's sum of token F1 with the other aliases of its list (0.0 for an alias with
  parentheses or no words), summed left to right in list order as Python's `sum` does."""
  words = _token_lists(flat)
  n = len(flat)
  size = np.array([len(w) for w in words], dtype=np.float64)
  alias_of = np.repeat(np.arange(n), [len(w) for w in words])
  ids: Dict[str, int] = {}
  token_of = np.array([ids.setdefault(t, len(ids)) for ws in words for t in ws], dtype=np.int64)
  vocab = max(len(ids), 1)
  # Count of each token in each alias, grouped by (list, token): the aliases in one group are
  # the ones that share that token.
  key, count = np.unique(alias_of * vocab + token_of, return_counts=True)
  alias, token = np.divmod(key, vocab)
  order = np.lexsort((alias, token, list_of[alias]))
  alias, token, count = alias[order], token[order], count[order]
  group_key = list_of[alias] * vocab + token
  new_group = np.r_[True, group_key[1:] != group_key[:-1]]
  group_start = np.flatnonzero(new_group)
  group = np.cumsum(new_group) - 1
  per_entry = np.diff(np.r_[group_start, len(alias)])[group]
  # Every entry meets every entry of its group: (a, b, min of their counts of the token).
  i = np.repeat(np.arange(len(alias)), per_entry)
  j = group_start[group[i]] + np.arange(len(i)) - np.repeat(np.cumsum(per_entry) - per_entry,
                                                             per_entry)
  keep = alias[i] != alias[j]
  pair, where = np.unique(alias[i][keep] * n + alias[j][keep], return_inverse=True)
  # Tokens shared by a and b: sum over tokens of min(count_a, count_b), as in `metrics.bag_f1`.
  same = np.bincount(where, weights=np.minimum(count[i], count[j])[keep], minlength=len(pair))
  a, b = np.divmod(pair, n)                       # sorted by a, then b: each row in list order
  precision, recall = same / size[a], same / size[b]
  f1 = 2 * precision * recall / (precision + recall)   # same > 0 for every pair here
  # Left-to-right sums: the k-th term of every alias at once. Pairs that share no token add
  # 0.0, which leaves a sum as it is, so they are left out.
  starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
  rank = np.arange(len(a)) - np.repeat(starts, np.diff(np.r_[starts, len(a)]))
  by_rank = np.argsort(rank, kind="stable")
  bounds = np.searchsorted(rank[by_rank], np.arange(rank.max(initial=-1) + 2))
  score = np.zeros(n)
  for k in range(len(bounds) - 1):
    terms = by_rank[bounds[k]:bounds[k + 1]]
    score[a[terms]] += f1[terms]
  score[(size == 0) | np.array(["(" in alias for alias in flat])] = 0.0
  return score


def _token_lists(texts: Sequence[str]) -> List[List[str]]:
  """`metrics.normalize_answer(t).split()` of each text."""
  joined = _SEP.join(texts)
  if joined.count(_SEP) != len(texts) - 1:   # a text holds the separator itself
    return [metrics.normalize_answer(t).split() for t in texts]
  return [part.split() for part in metrics.answer_words(joined).split(_SEP)]
