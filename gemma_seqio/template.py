"""The Gemma dialog template: pure string and token functions (no TensorFlow, no JAX).

The layout is that of `gm.data.Seq2SeqTask` in the gemma library:

>>> format_prompt("Hi")
'<start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\n'
>>> format_response("Hello!")
'Hello!<end_of_turn>'

Token level, BOS (2) only at the very start, and no `<eos>` (1) unless asked:

>>> tok = lambda s: [len(s)]          # any `str -> list[int]` encoder; the real one maps
>>> encode_prompt_response(tok, "a", "b")           # <start_of_turn> to 106, <end_of_turn> to 107
([2, 56], [14])
>>> encode_prompt_response(tok, "a", "b", add_eos=True)
([2, 56], [14, 1])

`make_seq2seq_fields` is the shift/mask core: input and target are the same sequence shifted by
one, the mask is 1 on response tokens (including `<end_of_turn>`):

>>> f = make_seq2seq_fields([10, 11, 12, 13], [20, 21, 1])
>>> f.input, f.target, f.target_mask
([10, 11, 12, 13, 20, 21], [11, 12, 13, 20, 21, 1], [0, 0, 0, 1, 1, 1])
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Sequence, Tuple

from gemma_seqio.special_tokens import BOS_ID, END_OF_TURN, EOS_ID, START_OF_TURN

USER = "user"
MODEL = "model"
PROMPT_TEMPLATE = START_OF_TURN + "user\n{}" + END_OF_TURN + "\n" + START_OF_TURN + "model\n"
ANSWER_TEMPLATE = "{}" + END_OF_TURN
# What is fed back after a model answer before the next user turn.
TURN_SEPARATOR = "\n"


def format_prompt(prompt: str) -> str:
  """User turn + the opening of the model turn: the `inputs` text of a task."""
  return PROMPT_TEMPLATE.format(prompt)


def format_response(response: str) -> str:
  """Model answer + `<end_of_turn>`: the `targets` text of a task."""
  return ANSWER_TEMPLATE.format(response)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Turn:
  """One turn of a conversation; `role` is 'user' or 'model'."""
  role: str
  text: str

  def __post_init__(self):
    if self.role not in (USER, MODEL):
      raise ValueError(f"Turn.role must be 'user' or 'model', got {self.role!r}")


def format_dialog(turns: Sequence[Turn], *, add_generation_prompt: bool = True) -> Tuple[str, str]:
  """Multi-turn conversation -> (`inputs`, `targets`) text.

  The last turn must be the model's (it becomes `targets`); earlier turns, completed with
  `<end_of_turn>\\n`, form `inputs`, ending with `<start_of_turn>model\\n`.

  >>> format_dialog([Turn(role="user", text="Hi"), Turn(role="model", text="Hello"),
  ...                Turn(role="user", text="Bye"), Turn(role="model", text="Ciao")])
  ('<start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\nHello<end_of_turn>\\n<start_of_turn>user\\nBye<end_of_turn>\\n<start_of_turn>model\\n', 'Ciao<end_of_turn>')
  """
  if not turns or turns[-1].role != MODEL:
    raise ValueError("format_dialog: the last turn must be the model's answer")
  for prev, cur in zip(turns, turns[1:]):
    if prev.role == cur.role:
      raise ValueError(f"format_dialog: two consecutive {cur.role!r} turns")
  if turns[0].role != USER:
    raise ValueError("format_dialog: the first turn must be the user's")
  history = "".join(
      f"{START_OF_TURN}{t.role}\n{t.text}{END_OF_TURN}{TURN_SEPARATOR}" for t in turns[:-1])
  inputs = history + (f"{START_OF_TURN}{MODEL}\n" if add_generation_prompt else "")
  return inputs, format_response(turns[-1].text)


def encode_prompt_response(
    encode: Callable[[str], Sequence[int]],
    prompt: str,
    response: str,
    *,
    add_bos: bool = True,
    add_eos: bool = False,
) -> Tuple[List[int], List[int]]:
  """Token ids of a formatted (prompt, response), as `gm.data.Seq2SeqTask` builds them.

  BOS only at the very start of the prompt; `<eos>` after `<end_of_turn>` only with
  `add_eos=True` (keras-hub's Gemma preprocessor appends it; the gemma library does not).
  """
  prompt_ids = ([BOS_ID] if add_bos else []) + list(encode(format_prompt(prompt)))
  response_ids = list(encode(format_response(response))) + ([EOS_ID] if add_eos else [])
  return prompt_ids, response_ids


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seq2SeqFields:
  """`input`, `target`, `target_mask`: each of length len(prompt) + len(response) - 1."""
  input: List[int]
  target: List[int]
  target_mask: List[int]


def make_seq2seq_fields(prompt: Sequence[int], response: Sequence[int]) -> Seq2SeqFields:
  """Next-token fields: the prompt (which starts with BOS) is masked, the response is not."""
  if not prompt:
    raise ValueError("make_seq2seq_fields: the prompt needs at least one token (BOS)")
  sequence = list(prompt) + list(response)
  return Seq2SeqFields(
      input=sequence[:-1],
      target=sequence[1:],
      target_mask=[0] * (len(prompt) - 1) + [1] * len(response),
  )
