"""`ChatSampler`: template, BOS once, `<end_of_turn>\\n` fed back, cache kept across turns."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemma_seqio import special_tokens as S
from gemma_seqio import template
from gemma_tasks.vocab import GemmaVocabulary
from model.chat import ChatSampler
from model.config import tiny_gemma2
from model.decoding import Greedy
from model.transformer import forward, init_params

CONFIG = tiny_gemma2()   # the bundled 4096-piece vocabulary; window 16 < a conversation


@pytest.fixture(scope="module")
def vocab():
  return GemmaVocabulary()


@pytest.fixture(scope="module")
def params():
  return init_params(CONFIG, jax.random.PRNGKey(0))


def full_forward_logits(params, tokens, n):
  """Logits of the last n predictions of one pass over `tokens`."""
  logits = forward(CONFIG, params, jnp.asarray([tokens]))[0]
  return np.asarray(logits[len(tokens) - 1 - n:len(tokens) - 1])


def test_turn_two_logits_equal_one_pass_over_the_conversation(params, vocab):
  sampler = ChatSampler(CONFIG, params, vocab, multi_turn=True, max_new_tokens=6, cache_length=256)
  first = sampler.chat("Translate to German: the cat")
  turn1 = sampler.last_turn
  second = sampler.chat("And the dog?")
  turn2 = sampler.last_turn
  assert isinstance(first, str) and isinstance(second, str)

  # Rebuild the conversation independently, from the template and the answers' tokens.
  def closing(turn):   # the answer (stop id dropped) + <end_of_turn> + "\n"
    return turn.tokens + [S.END_OF_TURN_ID] + vocab.encode("\n")
  expected = ([S.BOS_ID] + vocab.encode(template.format_prompt("Translate to German: the cat"))
              + closing(turn1) + vocab.encode(template.format_prompt("And the dog?")))
  generated2 = turn2.tokens + ([turn2.stop_id] if turn2.stop_id is not None else [])
  conversation = expected + generated2
  closed = expected + turn2.tokens + [S.END_OF_TURN_ID] + vocab.encode("\n")
  assert sampler.conversation_tokens == closed
  assert conversation.count(S.BOS_ID) == 1 and conversation[0] == S.BOS_ID
  assert len(conversation) > CONFIG.sliding_window_size

  # Greedy turn 2 with the cache equals one forward pass over the whole conversation.
  ref = full_forward_logits(params, conversation, len(generated2))
  np.testing.assert_allclose(turn2.logits, ref, atol=2e-5)
  assert turn2.tokens == np.argmax(ref, -1)[:len(turn2.tokens)].tolist()
  # And turn 1 likewise over its own prefix.
  start = len([S.BOS_ID] + vocab.encode(template.format_prompt("Translate to German: the cat")))
  n1 = len(turn1.logits)
  ref1 = full_forward_logits(params, conversation[:start + n1], n1)
  np.testing.assert_allclose(turn1.logits, ref1, atol=2e-5)

  # The text of the conversation is format_dialog of the turns.
  inputs, _ = template.format_dialog([
      template.Turn(role="user", text="Translate to German: the cat"),
      template.Turn(role="model", text=first),
      template.Turn(role="user", text="And the dog?"),
      template.Turn(role="model", text=second)])
  assert vocab.decode(expected) == inputs


def test_a_stop_token_is_replaced_by_end_of_turn(params, vocab):
  """Whatever stop id ends an answer (here the first greedy token, declared a stop id), the
  cache gets `<end_of_turn>\\n` after the answer, never the stop id itself."""
  probe = ChatSampler(CONFIG, params, vocab, max_new_tokens=3, cache_length=128)
  probe.chat("Hi")
  stop = probe.last_turn.tokens[0]
  sampler = ChatSampler(CONFIG, params, vocab, multi_turn=True, max_new_tokens=3,
                        cache_length=128, stop_ids=(stop,))
  assert sampler.chat("Hi") == ""
  assert sampler.last_turn.stop_id == stop and sampler.last_turn.tokens == []
  sampler.chat("Again")
  turn1 = [S.BOS_ID] + vocab.encode(template.format_prompt("Hi"))
  tokens = sampler.conversation_tokens
  assert tokens[:len(turn1) + 2] == turn1 + [S.END_OF_TURN_ID] + vocab.encode("\n")
  assert stop not in tokens[:len(turn1) + 2]
  assert tokens.count(S.BOS_ID) == 1


def test_single_turn_mode_starts_afresh(params, vocab):
  sampler = ChatSampler(CONFIG, params, vocab, max_new_tokens=4, cache_length=128,
                        strategy=Greedy())
  a = sampler.chat("Hello")
  logits_a = sampler.last_turn.logits
  sampler.chat("Something else entirely")
  b = sampler.chat("Hello")
  assert a == b
  np.testing.assert_allclose(sampler.last_turn.logits, logits_a, atol=1e-6)
  assert sampler.conversation_tokens[0] == S.BOS_ID


def test_conversation_longer_than_the_cache_is_refused(params, vocab):
  sampler = ChatSampler(CONFIG, params, vocab, multi_turn=True, max_new_tokens=4, cache_length=32)
  with pytest.raises(ValueError, match="conversation too long"):
    for _ in range(10):
      sampler.chat("a fairly long user message that takes up room")
