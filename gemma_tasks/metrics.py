"""Metrics for `seqio.Evaluator`: corpus BLEU and exact match (max over answer aliases).

>>> round(bleu(["Die Suchleiste wird angezeigt ."], ["Die Suchleiste wird angezeigt ."])["bleu"], 6)
100.0
>>> exact_match([["Eiffel Tower", "La tour Eiffel"]], ["the Eiffel Tower!"])
{'exact_match': 100.0, 'f1': 100.0}
"""
from __future__ import annotations

import collections
import re
import string
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import sacrebleu


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
  """sacrebleu corpus BLEU with the settings seqio's README uses (T5's `bleu` metric).

  smooth exp, tokenize 'intl', case-sensitive, full order. One reference per prediction; if a
  target is a list (several references), all are used.
  """
  if len(targets) != len(predictions):
    raise ValueError(f"bleu: {len(targets)} targets vs {len(predictions)} predictions")
  if targets and isinstance(targets[0], (list, tuple)):
    n_refs = max(len(t) for t in targets)
    refs = [[t[i] if i < len(t) else "" for t in targets] for i in range(n_refs)]
  else:
    refs = [list(targets)]
  score = sacrebleu.corpus_bleu(list(predictions), refs, smooth_method="exp", smooth_value=0.0,
                                force=False, lowercase=False, tokenize="intl",
                                use_effective_order=False)
  return {"bleu": score.score}


_PUNCT = set(string.punctuation) | {"‘", "’", "´", "`", "“", "”", "«", "»", "„"}
# One regex pass deletes them (a character-by-character filter cost ~10x more, `str.translate` ~6x).
_PUNCT_CHARS = re.compile("[" + "".join(re.escape(ch) for ch in sorted(_PUNCT)) + "]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  """SQuAD/TriviaQA normalisation: lower case, no punctuation, no articles, single spaces.

  >>> normalize_answer("  The  Beatles' \\"Help!\\" ")
  'beatles help'
  """
  return " ".join(answer_words(text).split())


def answer_words(text: str) -> str:
  """`normalize_answer` before its spaces are collapsed; other characters stay where they are,
  so many answers joined by a separator such as "\\x00" can be normalised in one call."""
  return _ARTICLES.sub(" ", _PUNCT_CHARS.sub("", text.lower().replace("_", " ")))


def token_f1(prediction: str, target: str) -> float:
  """SQuAD token F1 between two answers (normalised first)."""
  return bag_f1(collections.Counter(normalize_answer(prediction).split()),
                collections.Counter(normalize_answer(target).split()))


def bag_f1(prediction: Mapping[str, int], target: Mapping[str, int]) -> float:
  """SQuAD token F1 between two bags of words ({token: count}); 1.0 if both are empty.

  >>> bag_f1(collections.Counter("a b b".split()), collections.Counter("b c".split()))
  0.4
  """
  p_size, t_size = sum(prediction.values()), sum(target.values())
  if not p_size or not t_size:
    return float(p_size == t_size)
  small, large = (prediction, target) if len(prediction) <= len(target) else (target, prediction)
  same = sum(min(count, large[token]) for token, count in small.items() if token in large)
  if same == 0:
    return 0.0
  precision, recall = same / p_size, same / t_size
  return 2 * precision * recall / (precision + recall)


def exact_match(targets: Sequence[Union[str, Sequence[str]]],
                predictions: Sequence[str]) -> Mapping[str, float]:
  """Percentage of predictions equal to any alias after `normalize_answer`; also token F1.

  Aliases that normalise to nothing ("]", "A", "The") are left out: kept, they would count an
  empty or punctuation-only prediction as correct. An example left with no alias at all cannot be
  scored and is an error naming it (fix the data rather than report a wrong score).

  >>> exact_match([["]", "Moscow"]], [""])
  {'exact_match': 0.0, 'f1': 0.0}
  """
  if len(targets) != len(predictions):
    raise ValueError(f"exact_match: {len(targets)} targets vs {len(predictions)} predictions")
  if not targets:
    return {"exact_match": 0.0, "f1": 0.0}
  em = f1 = 0.0
  for i, (aliases, pred) in enumerate(zip(targets, predictions)):
    aliases = [aliases] if isinstance(aliases, str) else list(aliases)
    scorable = [a for a in aliases if normalize_answer(a)]
    if aliases and not scorable:
      raise ValueError(f"exact_match: example {i}: no answer alias is left after normalisation "
                       f"(aliases {aliases!r}); remove the example or give it a real answer")
    norm = normalize_answer(pred)
    em += float(any(norm == normalize_answer(a) for a in scorable))
    f1 += max((token_f1(pred, a) for a in scorable), default=0.0)
  return {"exact_match": 100.0 * em / len(targets), "f1": 100.0 * f1 / len(targets)}


def exact_match_by_group(targets: Sequence[Mapping[str, object]],
                         predictions: Sequence[str]) -> Mapping[str, float]:
  """`exact_match` over all examples, and per group (`exact_match/<group>`, `examples/<group>`).

  Targets are what `postprocessors.qa_answers_by_group` gives: {"answers": aliases, "group": g}.
  The groups of the quiz are its source tables (elements, capitals, area codes, ...), so the
  scores say which kinds of question a model answers and which it cannot.

  >>> exact_match_by_group([{"answers": ["Ni"], "group": "elements"},
  ...                       {"answers": ["Sr"], "group": "elements"},
  ...                       {"answers": ["Cairo"], "group": "africa"}], ["Ni", "S", "Cairo"])
  {'exact_match': 66.66666666666667, 'f1': 66.66666666666667, 'exact_match/africa': 100.0, 'examples/africa': 1, 'exact_match/elements': 50.0, 'examples/elements': 2}
  """
  if len(targets) != len(predictions):
    raise ValueError(f"exact_match_by_group: {len(targets)} targets vs {len(predictions)} "
                     "predictions")
  answers = [t["answers"] for t in targets]
  scores = dict(exact_match(answers, predictions))
  members = collections.defaultdict(list)
  for i, t in enumerate(targets):
    members[t["group"]].append(i)
  for group in sorted(members):
    idx = members[group]
    scores[f"exact_match/{group}"] = exact_match(
        [answers[i] for i in idx], [predictions[i] for i in idx])["exact_match"]
    scores[f"{GROUP_SIZE}/{group}"] = len(idx)
  return scores


GROUP_SIZE = "examples"   # `examples/<group>`: how many examples a group's scores are over


def split_group(key: str) -> Tuple[str, Optional[str]]:
  """(metric, group) of a score's name; group None for a score over all examples.

  >>> split_group("exact_match/elements"), split_group("bleu")
  (('exact_match', 'elements'), ('bleu', None))
  """
  metric, _, group = key.partition("/")
  return metric, group or None


def per_group(scores: Mapping[str, float], metric: str) -> Dict[str, Tuple[float, int]]:
  """{group: (score, examples)} of `metric` in scores from `exact_match_by_group`.

  >>> per_group({"exact_match": 5.0, "exact_match/elements": 27.3, "examples/elements": 22},
  ...           "exact_match")
  {'elements': (27.3, 22)}
  """
  out = {}
  for key, value in scores.items():
    name, group = split_group(key)
    if name == metric and group:
      out[group] = (value, int(scores.get(f"{GROUP_SIZE}/{group}", 0)))
  return out
