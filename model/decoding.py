"""Sampling strategies and KV-cache generation.

A strategy is a frozen, hashable dataclass, so it is a static `jax.jit` argument: calling
`generate` again with the same strategy and shapes reuses the compiled loop.

>>> import jax, jax.numpy as jnp
>>> from model.config import tiny_gemma1
>>> from model.transformer import init_params
>>> cfg = tiny_gemma1(); params = init_params(cfg, jax.random.PRNGKey(0))
>>> out = generate(cfg, params, [[2, 10, 11], [2, 12]], max_new_tokens=4, strategy=Greedy())
>>> out.tokens.shape, out.num_tokens.shape, out.scores.shape     # [B, max_new_tokens], [B], [B]
((2, 4), (2,), (2,))

Generation contract: the prompt rows (right-padded, `prompt_lengths` [B] real tokens) are written
into the cache at each row's `cache_index`; then one token per step is chosen from the logits,
with forbidden ids removed, until a stop id (default `<eos>` 1, `<end_of_turn>` 107) or the row's
budget (`max_new_tokens`, and the free cache slots) is reached. The stop token is returned
(it is how the caller knows why a row ended); slots after a row's `num_tokens` are 0. Every
generated token except the last is in the returned cache, so a conversation can continue from it.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from model.config import PAD_ID, STOP_IDS, GemmaConfig
from model.layers import NEG_INF
from model.transformer import Transformer, cache_slots, init_cache

# Incremented only while `_generate` is being traced: tests read it to prove that a second call
# with the same shapes and statics does not recompile.
TRACE_COUNT = collections.Counter()


def argmax(logits: jax.Array) -> jax.Array:
  """`jnp.argmax` over the last axis (first index of the maximum) as two plain reductions,
  which XLA's CPU backend runs ~4x faster than argmax's paired value/index reduction.

  >>> argmax(jnp.array([[0., 3., 3.], [2., 1., 0.]])).tolist()
  [1, 0]
  """
  best = jnp.max(logits, axis=-1, keepdims=True)
  iota = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  return jnp.min(jnp.where(logits == best, iota, logits.shape[-1]), axis=-1)


def top_k(x: jax.Array, k: int, chunk: int = 64) -> Tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(x, k)` of x [R, V] -> (values [R, k], int32 indices [R, k]), the same
  values and indices, ties included (lower index first), ~2.5x faster on CPU for a vocabulary.

  The k best lie in the k chunks of `chunk` entries with the largest maxima (each chunk that
  holds one of them has a maximum at least the k-th value; ties go to lower chunks, which hold
  the lower indices): one top-k over V / chunk chunk maxima, one over k * chunk candidates.

  >>> x = jnp.arange(256.0)[None] % 100
  >>> [v.tolist() for v in top_k(x, 3)] == [v.tolist() for v in jax.lax.top_k(x, 3)]
  True
  """
  rows, vocab = x.shape
  if vocab % chunk or vocab < 4 * k * chunk:
    return jax.lax.top_k(x, k)
  chunks = x.reshape(rows, vocab // chunk, chunk)
  _, which = jax.lax.top_k(jnp.max(chunks, axis=-1), k)
  which = jnp.sort(which, axis=-1)   # candidates in index order: ties resolve as in top_k
  candidates = jnp.take_along_axis(chunks, which[:, :, None], axis=1).reshape(rows, k * chunk)
  values, position = jax.lax.top_k(candidates, k)
  indices = jnp.take_along_axis(which, position // chunk, axis=1) * chunk + position % chunk
  return values, indices.astype(jnp.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingStrategy:
  """Base: `select(logits float32 [B, V], rng) -> int32 [B]`."""

  def select(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Greedy(SamplingStrategy):
  """argmax: `Greedy().select(jnp.array([[0., 3., 1.]]), rng) -> [1]`."""

  def select(self, logits, rng):
    del rng
    return argmax(logits).astype(jnp.int32)


def _check_temperature(t: float):
  if not t > 0:
    raise ValueError(f"temperature must be > 0 (use Greedy() for argmax), got {t}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Temperature(SamplingStrategy):
  """Sample from softmax(logits / temperature)."""
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)

  def select(self, logits, rng):
    return jax.random.categorical(rng, logits / self.temperature, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopK(SamplingStrategy):
  """Sample among the k most likely tokens: `TopK(k=1)` is greedy."""
  k: int
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)
    if self.k < 1:
      raise ValueError(f"TopK.k must be >= 1, got {self.k}")

  def select(self, logits, rng):
    values, indices = top_k(logits, self.k)                               # [B, k]
    choice = jax.random.categorical(rng, values / self.temperature, axis=-1)
    return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopP(SamplingStrategy):
  """Nucleus sampling: the smallest set of most likely tokens whose probability reaches p."""
  p: float
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)
    if not 0 < self.p <= 1:
      raise ValueError(f"TopP.p must be in (0, 1], got {self.p}")

  def select(self, logits, rng):
    scaled = logits / self.temperature
    sorted_logits = jnp.sort(scaled, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token when the mass before it is still < p: the first token is always kept and
    # the token that crosses p is included.
    keep = (jnp.cumsum(probs, axis=-1) - probs) < self.p
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    filtered = jnp.where(scaled >= threshold, scaled, NEG_INF)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


class GenerationOutput(NamedTuple):
  """tokens int32 [B, M] (0 after `num_tokens`), num_tokens int32 [B] (stop token included),
  scores float32 [B] (sum of the model's log-probabilities of the returned tokens, before any
  temperature or filtering), logits float32 [B, M, V] when asked for (else None), cache."""
  tokens: jax.Array
  num_tokens: jax.Array
  scores: jax.Array
  logits: Optional[jax.Array]
  cache: dict


def apply_with_cache(config: GemmaConfig, params, cache, tokens, advance):
  """One cached forward pass: tokens int [B, T] written at each row's `cache_index`, which moves
  by `advance` [B] -> (float32 logits [B, T, V], updated cache)."""
  logits, mutated = Transformer(config).apply(
      {"params": params, "cache": cache}, tokens, decode=True, prefill_lengths=advance,
      mutable=["cache"])
  return logits, mutated["cache"]


def prefill(config: GemmaConfig, params, cache, tokens, lengths, max_new_tokens: int):
  """Writes each prompt (tokens [B, P], `lengths` [B] real tokens) into the cache ->
  (logits float32 [B, V] after each prompt's last token, cache, budget int32 [B]).

  Each generated token but the last is written to the cache, so a row's budget is
  `max_new_tokens` capped by its free slots."""
  start = cache["layer_0"]["attn"]["cache_index"]
  cache_length = cache_slots(cache)
  logits, cache = apply_with_cache(config, params, cache, tokens, lengths)
  logits = jnp.take_along_axis(logits, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
  return logits, cache, jnp.minimum(max_new_tokens, cache_length - (start + lengths))


@functools.partial(jax.jit, static_argnames=(
    "config", "strategy", "max_new_tokens", "stop_ids", "forbidden_ids", "return_logits"))
def _generate(params, cache, tokens, lengths, rng, *, config, strategy, max_new_tokens,
              stop_ids, forbidden_ids, return_logits):
  TRACE_COUNT["generate"] += 1
  batch = tokens.shape[0]
  logits, cache, budget = prefill(config, params, cache, tokens, lengths, max_new_tokens)
  stop_array = jnp.asarray(stop_ids, jnp.int32) if stop_ids else None
  forbidden = jnp.asarray(forbidden_ids, jnp.int32) if forbidden_ids else None
  vocab = logits.shape[-1]

  def cond(state):
    step, _, _, done = state[:4]
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, logits, cache, done, out, num, scores, buf, rng = state
    rng, sub = jax.random.split(rng)
    allowed = logits if forbidden is None else logits.at[:, forbidden].set(NEG_INF)
    token = strategy.select(allowed, sub)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
    active = ~done
    token = jnp.where(active, token, PAD_ID)
    out = out.at[:, step].set(token)
    scores = scores + jnp.where(active, log_prob, 0.0)
    num = num + active.astype(jnp.int32)
    if return_logits:
      buf = buf.at[:, step].set(jnp.where(active[:, None], logits, 0.0))
    stopped = num >= budget
    if stop_array is not None:
      stopped = stopped | jnp.isin(token, stop_array)
    done = done | (active & stopped)
    feed = (active & ~done).astype(jnp.int32)
    # Finished rows write one slot past their content without advancing (a row's budget
    # leaves that slot free), and the shapes stay static. The step that finishes the last row
    # runs one forward pass nobody reads: skipping it with `lax.cond` cost more than it saved,
    # the conditional itself took ~0.17 ms of every 1.4 ms step at batch 1 (its own time in
    # `benchmarks.xla_profile`'s trace).
    logits, cache = apply_with_cache(config, params, cache, token[:, None], feed)
    return step + 1, logits[:, 0], cache, done, out, num, scores, buf, rng

  state = (
      jnp.int32(0), logits, cache, budget <= 0,
      jnp.zeros((batch, max_new_tokens), jnp.int32), jnp.zeros((batch,), jnp.int32),
      jnp.zeros((batch,), jnp.float32),
      jnp.zeros((batch, max_new_tokens, vocab) if return_logits else (0,), jnp.float32), rng)
  _, _, cache, _, out, num, scores, buf, _ = jax.lax.while_loop(cond, body, state)
  return GenerationOutput(out, num, scores, buf if return_logits else None, cache)


def _rounded_width(longest: int, multiple: int) -> int:
  """The prompt block's width: `longest` rounded up to `multiple`, at least `multiple`."""
  return max(multiple, -(-longest // multiple) * multiple)


def pad_prompts(prompts: Sequence[Sequence[int]], multiple: int = 16, *,
                limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """The prompt layout of every decoder here (`generate`, `model.chat`, `model.runner.evaluate`):
  token lists right-padded with PAD_ID to one width, the longest rounded up to a multiple of
  `multiple` (few distinct shapes = few compilations) but at most `limit` (e.g. a cache's free
  slots) -> (tokens int32 [B, width], lengths int32 [B]).

  >>> pad_prompts([[2, 5, 6], [2]], multiple=4)
  (array([[2, 5, 6, 0],
         [2, 0, 0, 0]], dtype=int32), array([3, 1], dtype=int32))
  >>> pad_prompts([[2, 5, 6]], limit=5)[0]        # 16 wide, but only 5 positions are free
  array([[2, 5, 6, 0, 0]], dtype=int32)
  """
  lengths = np.array([len(p) for p in prompts], np.int32)
  width = _rounded_width(int(lengths.max()), multiple)
  if limit is not None:
    if lengths.max() > limit:
      raise ValueError(f"a prompt of {lengths.max()} tokens does not fit in {limit} positions")
    width = min(width, limit)
  tokens = np.full((len(prompts), width), PAD_ID, np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, :len(prompt)] = prompt
  return tokens, lengths


def prompt_arrays(prompts, prompt_lengths=None,
                  cache_length: Optional[int] = None) -> Tuple[jax.Array, jax.Array]:
  """(tokens int32 [B, P], lengths int32 [B]) from token lists (padded here; padding beyond a
  fresh cache's `cache_length` is dropped) or from an array with its `prompt_lengths`."""
  if prompt_lengths is None:
    tokens, lengths = pad_prompts(prompts)
    if cache_length is not None and tokens.shape[1] > cache_length:
      if lengths.max() > cache_length:
        raise ValueError(
            f"a prompt of {lengths.max()} tokens does not fit cache_length={cache_length}")
      tokens = tokens[:, :cache_length]   # drop padding that would not fit the cache
  else:
    tokens, lengths = prompts, prompt_lengths
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32)


def drop_trailing_padding(tokens: jax.Array, lengths: jax.Array, multiple: int = 16) -> jax.Array:
  """`tokens` [B, P] cut to the longest prompt, rounded up to `multiple` (few shapes).

  Rows often carry room for the answer after the prompt (T5X's PrefixLM rows, which
  `model.runner.evaluate` decodes): the cache keeps its length, but the prefill and the beams'
  once-per-prompt keys (`model.beams`) then skip that padding. Under `jax.jit` the lengths are
  not known and the block stays as it is.

  >>> drop_trailing_padding(jnp.zeros((2, 64), jnp.int32), jnp.array([3, 17])).shape
  (2, 32)
  """
  if isinstance(lengths, jax.core.Tracer) or isinstance(tokens, jax.core.Tracer):
    return tokens
  width = _rounded_width(int(np.max(np.asarray(lengths), initial=1)), multiple)
  return tokens[:, :width] if width < tokens.shape[1] else tokens


def fit_to_cache(tokens: jax.Array, lengths: jax.Array, cache: dict) -> jax.Array:
  """`tokens` [B, P] cut to the width every row's free cache slots can take.

  The prompt block is written with `dynamic_update_slice` at each row's `cache_index`; a block
  that runs past the cache end is not cut but shifted back, overwriting earlier slots. Padding
  past the free slots is therefore dropped, and a prompt whose real tokens do not fit is refused.

  >>> from model.config import tiny_gemma1
  >>> from model.transformer import init_params
  >>> cfg = tiny_gemma1(); params = init_params(cfg, jax.random.PRNGKey(0))
  >>> cache = generate(cfg, params, [[2] * 8], max_new_tokens=1, cache_length=20).cache
  >>> fit_to_cache(jnp.zeros((1, 16), jnp.int32), jnp.array([3]), cache).shape   # 12 free
  (1, 12)
  """
  free = cache_slots(cache) - np.asarray(cache["layer_0"]["attn"]["cache_index"]).reshape(-1)
  lengths = np.asarray(lengths).reshape(-1)
  too_long = np.flatnonzero(lengths > free)
  if too_long.size:
    row = int(too_long[0])
    raise ValueError(f"prompt row {row} has {int(lengths[row])} tokens but its cache has only "
                     f"{int(free[row])} free slots (cache_length="
                     f"{cache_slots(cache)}); start a new cache or a larger one")
  width = int(free.min())
  return tokens[:, :width] if tokens.shape[1] > width else tokens


def generate(
    config: GemmaConfig,
    params,
    prompts: Union[Sequence[Sequence[int]], jax.Array],
    *,
    prompt_lengths: Optional[jax.Array] = None,
    strategy: SamplingStrategy = Greedy(),
    max_new_tokens: int = 32,
    stop_ids: Sequence[int] = STOP_IDS,
    forbidden_ids: Sequence[int] = (),
    rng: Optional[jax.Array] = None,
    cache: Optional[dict] = None,
    cache_length: Optional[int] = None,
    return_logits: bool = False,
) -> GenerationOutput:
  """Decode continuations of a batch of prompts with a KV cache.

  Args:
    prompts: token lists of different lengths (padded here), or an int array [B, P] with
      `prompt_lengths` [B] (each row's real tokens come first; the rest is padding).
    strategy: Greedy(), Temperature(...), TopK(...), TopP(...).
    max_new_tokens: the static size M of the output buffer.
    stop_ids / forbidden_ids: ids that end a row / are never chosen.
    cache: continue a cache returned by an earlier call (prompts are appended after each row's
      cached tokens); else a fresh one with `cache_length` (default P + M) slots.

  >>> from model.config import tiny_gemma1
  >>> from model.transformer import init_params
  >>> cfg = tiny_gemma1(); params = init_params(cfg, jax.random.PRNGKey(0))
  >>> generate(cfg, params, [[2, 10]], max_new_tokens=3, stop_ids=()).num_tokens.tolist()
  [3]
  """
  tokens, lengths = prompt_arrays(prompts, prompt_lengths,
                                  cache_length if cache is None else None)
  if cache is None:
    cache = init_cache(config, tokens.shape[0], cache_length or tokens.shape[1] + max_new_tokens)
  else:
    tokens = fit_to_cache(tokens, lengths, cache)
  tokens = drop_trailing_padding(tokens, lengths)
  if rng is None:
    rng = jax.random.PRNGKey(0)
  return _generate(
      params, cache, tokens, lengths, rng, config=config, strategy=strategy,
      max_new_tokens=int(max_new_tokens), stop_ids=tuple(int(i) for i in stop_ids),
      forbidden_ids=tuple(int(i) for i in forbidden_ids), return_logits=bool(return_logits))
