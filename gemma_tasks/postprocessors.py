"""Postprocessors for `seqio.Evaluator`: strip the dialog template from decoded text.

Model outputs are decoded token ids; they may still carry the turn markers (the vocabulary
decodes 106/107 to their text) and whatever followed `<end_of_turn>`:

>>> strip_template("<start_of_turn>model\\nSuchleiste<end_of_turn>\\n<start_of_turn>user")
'Suchleiste'
>>> qa_answers("Paris<end_of_turn>", example={"answers": [b"Paris", b"City of Light"]}, is_target=True)
['Paris', 'City of Light']
>>> qa_answers_by_group("Ni", example={"answers": [b"Ni"], "group": b"elements"}, is_target=True)
{'answers': ['Ni'], 'group': 'elements'}
"""
from __future__ import annotations

from gemma_seqio.special_tokens import END_OF_TURN, START_OF_TURN

_MODEL_HEAD = START_OF_TURN + "model\n"


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def strip_template(output_or_target, example=None, is_target=False) -> str:
  """The answer text: drops a leading `<start_of_turn>model\\n`, cuts at `<end_of_turn>`."""
  del example, is_target
  text = _text(output_or_target)
  if text.startswith(_MODEL_HEAD):
    text = text[len(_MODEL_HEAD):]
  return text.split(END_OF_TURN, 1)[0].split(START_OF_TURN, 1)[0].strip()


def qa_answers(output_or_target, example=None, is_target=False):
  """Like `strip_template`, but for targets returns every accepted alias (`answers` feature).

  This is the shape seqio's README gives its `trivia_qa_open` postprocessor, so `exact_match`
  can take the max over aliases.
  """
  if is_target:
    return [_text(a) for a in example["answers"]]
  return strip_template(output_or_target)


def qa_answers_by_group(output_or_target, example=None, is_target=False):
  """`qa_answers`, with the example's `group` next to the aliases of a target (for
  `metrics.exact_match_by_group`)."""
  if is_target:
    return {"answers": qa_answers(output_or_target, example, is_target=True),
            "group": _text(example["group"])}
  return strip_template(output_or_target)
