"""The Gemma vocabulary as a `seqio.Vocabulary`.

`GemmaVocabulary()` loads, in this order:
  1. the `tokenizer_path` argument,
  2. the file named by the environment variable `GEMMA_TOKENIZER_PATH` (e.g. the real Gemma
     `tokenizer.model`, 256,000 pieces),
  3. the SentencePiece model shipped in `gemma_tasks/data/gemma_seqio_4k.model`, trained by
     `tools/train_vocab.py` on the embedded corpora with Gemma's special-id layout.

>>> v = GemmaVocabulary()
>>> v.pad_id, v.eos_id, v.bos_id, v.unk_id
(0, 1, 2, 3)
>>> v.encode("<start_of_turn>user\\nHi<end_of_turn>")   # each turn marker is one token
[106, 402, 366, 108, 4053, 3999, 107]
>>> v.decode([106, *v.encode("user"), 107])
'<start_of_turn>user<end_of_turn>'

The file is loaded and checked at construction, so a wrong file fails there, naming its path:

>>> import tempfile
>>> with tempfile.NamedTemporaryFile("w", suffix="-notes.txt") as notes:
...   _ = notes.write("Shopping list: milk, bread")
...   notes.flush()
...   GemmaVocabulary(notes.name)
Traceback (most recent call last):
ValueError: /tmp/...-notes.txt: not a SentencePiece model (DecodeError: Error parsing message with
type 'sentencepiece.ModelProto')
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import seqio

from gemma_seqio import special_tokens

ENV_VAR = "GEMMA_TOKENIZER_PATH"
DEFAULT_MODEL_FILE = os.path.join(os.path.dirname(__file__), "data", "gemma_seqio_4k.model")

_EXPECTED = {
    special_tokens.PAD_ID: "<pad>",
    special_tokens.EOS_ID: "<eos>",
    special_tokens.BOS_ID: "<bos>",
    special_tokens.UNK_ID: "<unk>",
    special_tokens.START_OF_TURN_ID: special_tokens.START_OF_TURN,
    special_tokens.END_OF_TURN_ID: special_tokens.END_OF_TURN,
}


def _file_size(path: str) -> int:
  """Size of `path` in bytes (local files; other file systems count as non-empty)."""
  try:
    return os.path.getsize(path)
  except OSError:
    return 1


def resolve_tokenizer_path(tokenizer_path: Optional[str] = None) -> str:
  """Argument, else $GEMMA_TOKENIZER_PATH, else the bundled model."""
  path = tokenizer_path or os.environ.get(ENV_VAR) or DEFAULT_MODEL_FILE
  if not os.path.exists(path):
    source = "argument" if tokenizer_path else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "bundled default"
    raise FileNotFoundError(f"Gemma tokenizer model not found: {path!r} (from {source})")
  return path


class GemmaVocabulary(seqio.SentencePieceVocabulary):
  """SentencePiece vocabulary with Gemma's ids: pad 0, eos 1, bos 2, unk 3, turns 106/107.

  Unlike seqio's default T5 layout (where BOS is absent and 0 doubles as the decoder start id),
  `bos_id` is 2. The model is loaded (once per file and process, seqio caches it) and its ids
  checked at construction, so a file that is not a SentencePiece model, or a tokenizer with
  another layout, is refused there with a message naming the file (and the mismatching piece).

  Equality is seqio's: two vocabularies are equal when their `__getstate__` is, which holds only
  the constructor arguments (no load or check state), so using one does not change it.
  """

  def __init__(self, tokenizer_path: Optional[str] = None, *, use_fast_tokenizer: bool = False):
    super().__init__(resolve_tokenizer_path(tokenizer_path), use_fast_tokenizer=use_fast_tokenizer)
    self.load_model()  # fail here, naming the file, rather than at the first encode

  def _model_context(self):
    if self._model is not None:
      return self._model
    path = self.sentencepiece_model_file
    if not _file_size(path):
      raise ValueError(f"{path}: empty file, not a SentencePiece model")
    try:
      ctx = super()._model_context()
    except Exception as e:  # protobuf's DecodeError, SentencePiece's RuntimeError, ...
      raise ValueError(f"{path}: not a SentencePiece model ({type(e).__name__}: {e})") from e
    # Six lookups each time the model is (re)loaded: cheap, and no flag to keep in the state.
    sp = ctx.tokenizer
    for i, piece in _EXPECTED.items():
      if i >= sp.get_piece_size() or sp.id_to_piece(i) != piece:
        self._model = None
        got = sp.id_to_piece(i) if i < sp.get_piece_size() else "missing"
        raise ValueError(f"{path}: id {i} is {got!r}, expected {piece!r}; not a Gemma tokenizer "
                         "layout")
    return ctx

  @property
  def bos_id(self) -> int:
    return special_tokens.BOS_ID

  @property
  def start_of_turn_id(self) -> int:
    return special_tokens.START_OF_TURN_ID

  @property
  def end_of_turn_id(self) -> int:
    return special_tokens.END_OF_TURN_ID

  def __str__(self) -> str:
    return f"GemmaVocabulary(file={self.sentencepiece_model_file}, size={self.vocab_size})"


@functools.lru_cache(maxsize=None)
def get_vocabulary(tokenizer_path: Optional[str] = None) -> GemmaVocabulary:
  """The shared vocabulary instance (one per resolved path)."""
  return GemmaVocabulary(resolve_tokenizer_path(tokenizer_path))
