"""`ChatSampler`: talk to a Gemma model with a dialog template (`ChatTemplate`) and a KV cache.

>>> sampler = ChatSampler(config, params, multi_turn=True)  # doctest: +SKIP
>>> sampler.chat("Translate to French: cat")  # doctest: +SKIP
'chat'
>>> sampler.chat("And dog?")                  # continues the cached conversation  # doctest: +SKIP
'chien'

(`config, params = model.load_hf_checkpoint(path)` of a trained Gemma; the default vocabulary is
`gemma_tasks.vocab.GemmaVocabulary()`.) The template is data, Gemma's by default:

>>> GEMMA_TEMPLATE.format_prompt("Hi")
'<start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\n'
>>> GEMMA_TEMPLATE.bos_id, GEMMA_TEMPLATE.end_of_turn_id, GEMMA_TEMPLATE.stop_ids
(2, 107, (1, 107))

What the model sees (multi-turn), token for token:

  <bos><start_of_turn>user\\nTranslate to French: cat<end_of_turn>\\n<start_of_turn>model\\n
  chat<end_of_turn>\\n<start_of_turn>user\\nAnd dog?<end_of_turn>\\n<start_of_turn>model\\n chien

BOS once, at the very start. After each answer, `<end_of_turn>` and "\\n" are fed into the cache
before the next user turn (also when the answer ended on `<eos>` or on the token budget), so the
cached conversation equals `format_dialog` of the turns. The last sampled token of a turn is
never in the cache after `generate` (see `model.decoding`); it is fed with the next turn.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import jax
import numpy as np

from gemma_seqio import special_tokens, template
from model import decoding
from model.config import GemmaConfig
from model.transformer import init_cache


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatTemplate:
  """How a conversation is laid out: `prompt` (a user turn plus the opening of the model turn,
  `{}` for the text), the ids of BOS (once, at the start) and of the end of a turn (closes each
  answer, followed by the text `turn_separator`), and the ids that end an answer."""
  prompt: str = template.PROMPT_TEMPLATE
  turn_separator: str = template.TURN_SEPARATOR
  bos_id: int = special_tokens.BOS_ID
  end_of_turn_id: int = special_tokens.END_OF_TURN_ID
  stop_ids: Tuple[int, ...] = special_tokens.STOP_IDS

  def format_prompt(self, text: str) -> str:
    return self.prompt.format(text)


# Gemma's dialog template (`gemma_seqio.template`), as the tasks format their examples.
GEMMA_TEMPLATE = ChatTemplate()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatTurn:
  """The last answer: `tokens` (stop token excluded), `text`, `stop_id` (None = budget hit),
  `logits` float32 [len(generated), V] of every generated token (stop token included)."""
  tokens: List[int]
  text: str
  stop_id: Optional[int]
  logits: np.ndarray


class ChatSampler:
  """Prompt-in, text-out chat over one conversation.

  Args:
    config, params: the model (`load_hf_checkpoint(path)` returns both).
    vocabulary: encodes/decodes text; default `gemma_tasks.vocab.GemmaVocabulary()`.
    strategy: a `model.decoding` strategy (Greedy(), TopK(k=...), ...).
    max_new_tokens: per answer.
    cache_length: slots of the KV cache: the whole conversation must fit.
    multi_turn: keep the conversation (and its cache) across `chat` calls; else every call
      starts afresh.
    forbidden_ids / stop_ids: see `model.decoding.generate` (default stop ids: the template's).
    template: the dialog layout (`GEMMA_TEMPLATE`).
  """

  def __init__(
      self,
      config: GemmaConfig,
      params,
      vocabulary=None,
      *,
      strategy: decoding.SamplingStrategy = decoding.Greedy(),
      max_new_tokens: int = 256,
      cache_length: int = 2048,
      multi_turn: bool = False,
      forbidden_ids: Sequence[int] = (),
      stop_ids: Optional[Sequence[int]] = None,
      seed: int = 0,
      template: ChatTemplate = GEMMA_TEMPLATE,  # pylint: disable=redefined-outer-name
  ):
    if vocabulary is None:
      from gemma_tasks.vocab import GemmaVocabulary  # pylint: disable=g-import-not-at-top
      vocabulary = GemmaVocabulary()
    self.config = config
    self.params = params
    self.vocabulary = vocabulary
    self.strategy = strategy
    self.max_new_tokens = max_new_tokens
    self.cache_length = cache_length
    self.multi_turn = multi_turn
    self.forbidden_ids = tuple(forbidden_ids)
    self.template = template
    self.stop_ids = tuple(template.stop_ids if stop_ids is None else stop_ids)
    self._rng = jax.random.PRNGKey(seed)
    self.last_turn: Optional[ChatTurn] = None
    self.reset()

  def reset(self) -> None:
    """Forget the conversation."""
    self._cache = init_cache(self.config, 1, self.cache_length)
    self._cached_tokens: List[int] = []   # exactly the tokens in the cache, in order
    self._pending: List[int] = []         # to feed before the next user turn

  @property
  def conversation_tokens(self) -> List[int]:
    """Every token of the conversation so far, including the closing of the last answer."""
    return self._cached_tokens + self._pending

  def _encode(self, text: str) -> List[int]:
    return list(self.vocabulary.encode(text))

  def chat(
      self,
      prompt: str,
      *,
      max_new_tokens: Optional[int] = None,
      strategy: Optional[decoding.SamplingStrategy] = None,
  ) -> str:
    """One user turn -> the model's answer text (without `<end_of_turn>`)."""
    if not self.multi_turn:
      self.reset()
    chunk = list(self._pending) if self._cached_tokens else [self.template.bos_id]
    chunk += self._encode(self.template.format_prompt(prompt))
    start = len(self._cached_tokens)
    free = self.cache_length - start
    if len(chunk) >= free:
      raise ValueError(f"conversation too long: {start} cached + {len(chunk)} new tokens do not "
                       f"leave room for an answer in cache_length={self.cache_length}")
    # Padded to a multiple of 16 (few shapes, few compilations) but never past the cache end.
    tokens, lengths = decoding.pad_prompts([chunk], 16, limit=free)
    self._rng, rng = jax.random.split(self._rng)
    out = decoding.generate(
        self.config, self.params, tokens, prompt_lengths=lengths,
        strategy=strategy or self.strategy, max_new_tokens=max_new_tokens or self.max_new_tokens,
        stop_ids=self.stop_ids, forbidden_ids=self.forbidden_ids, rng=rng, cache=self._cache,
        return_logits=True)
    num = int(out.num_tokens[0])
    generated = [int(t) for t in np.asarray(out.tokens[0, :num])]
    stop_id = generated[-1] if generated and generated[-1] in self.stop_ids else None
    answer = generated[:-1] if stop_id is not None else generated
    self._cache = out.cache
    self._cached_tokens += chunk + generated[:-1]
    # Close the model turn as the template does: answer + <end_of_turn> + "\n". A stop token
    # that is not <end_of_turn> (e.g. <eos>) is replaced by it.
    unfed = [] if stop_id is not None or not generated else [generated[-1]]
    self._pending = (unfed + [self.template.end_of_turn_id]
                     + self._encode(self.template.turn_separator))
    text = self.vocabulary.decode(answer)
    self.last_turn = ChatTurn(tokens=answer, text=text, stop_id=stop_id,
                              logits=np.asarray(out.logits[0, :num]))
    return text
