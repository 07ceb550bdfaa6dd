"""The vocabulary a run was trained with, recorded in its model dir and checked later.

Two SentencePiece files with Gemma's id layout (pad 0, eos 1, bos 2, ...) load alike, and a
model trained on one runs on the other's ids without an error: every non-special id now means
another piece. `model.runner.train` therefore writes `<model_dir>/vocabulary.json` (the SHA-256 of the
SentencePiece model proto, its size and file) and refuses to resume, and `model.runner.evaluate` to
evaluate, a task whose vocabulary differs, unless told to (`--allow_vocabulary_change`).

>>> import tempfile
>>> info = describe("gemma_quiz_qa")
>>> sorted(info), info["vocab_size"]
(['file', 'sha256', 'vocab_size'], 4096)
>>> with tempfile.TemporaryDirectory() as run:
...   record(run, info)                               # at the start of a run
...   check(run, describe("gemma_quiz_qa"))           # '' : the same vocabulary
''
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

VOCABULARY_FILE = "vocabulary.json"
OVERRIDE_FLAG = "--allow_vocabulary_change"


class VocabularyMismatchError(ValueError):
  """The task's vocabulary is not the one the run was trained with."""


def fingerprint(vocabulary) -> dict:
  """{'sha256', 'vocab_size', 'file'} of a seqio vocabulary (the serialized SentencePiece
  model for SentencePiece vocabularies, else the class name and size)."""
  proto = getattr(vocabulary, "sp_model", None)
  data = proto if isinstance(proto, bytes) else \
      f"{type(vocabulary).__name__}:{vocabulary.vocab_size}".encode()
  return {"sha256": hashlib.sha256(data).hexdigest(),
          "vocab_size": int(vocabulary.vocab_size),
          "file": getattr(vocabulary, "sentencepiece_model_file", None)}


def describe(task: str) -> Optional[dict]:
  """The fingerprint of a task's (or mixture's) output vocabulary; None when it has none.

  A mixture's tasks share one vocabulary (seqio requires it), so the first one found is it.
  """
  from model.runner import inputs  # pylint: disable=g-import-not-at-top
  for t in inputs.subtasks(task):
    for feature in t.output_features.values():
      if getattr(feature, "vocabulary", None) is not None:
        return fingerprint(feature.vocabulary)
  return None


def recorded(model_dir: str) -> Optional[dict]:
  path = os.path.join(model_dir, VOCABULARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def record(model_dir: str, info: Optional[dict], replaced: Optional[dict] = None) -> None:
  """Writes `vocabulary.json` (atomically); `replaced` keeps the one an override replaced."""
  if info is None:
    return
  entry = dict(info, **({"replaced": replaced} if replaced else {}))
  path = os.path.join(model_dir, VOCABULARY_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(entry, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def check(model_dir: str, info: Optional[dict], allow_change: bool = False) -> str:
  """'' when the run's vocabulary is `info` (or either is unknown: a run dir from T5X or an
  older version); a warning to show when they differ and `allow_change`; else raises
  VocabularyMismatchError naming both files."""
  then = recorded(model_dir)
  if not then or not info or then.get("sha256") == info["sha256"]:
    return ""
  what = (f"{model_dir} was trained with the vocabulary {then.get('file')} "
          f"({then.get('vocab_size')} pieces, sha256 {then.get('sha256', '')[:12]}), but the "
          f"task's is {info.get('file')} ({info['vocab_size']} pieces, sha256 "
          f"{info['sha256'][:12]})")
  if not allow_change:
    raise VocabularyMismatchError(
        f"{what}: the ids would mean other pieces. Set GEMMA_TOKENIZER_PATH to the run's "
        f"vocabulary, or pass {OVERRIDE_FLAG} if the change is intended")
  return f"WARNING: {what}; continuing because of {OVERRIDE_FLAG}"
