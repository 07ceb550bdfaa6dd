"""Gemma building blocks in Flax linen: RMSNorm, embedder, RoPE, GeGLU, attention with a KV cache.

Shapes: B batch, T query length, S key length (the cache length when decoding), D embed_dim,
N query heads, K key/value heads (G = N // K queries share one), H head_dim, F hidden_dim, V vocab.

>>> import jax, jax.numpy as jnp
>>> norm = RMSNorm()
>>> x = jnp.array([[3.0, 4.0]])
>>> y = norm.apply(norm.init(jax.random.PRNGKey(0), x), x)    # scale starts at 0: x / rms(x)
>>> y.dtype, [round(v, 4) for v in y[0].tolist()]             # [3, 4] / sqrt(12.5)
(dtype('float32'), [0.8485, 1.1314])
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

from model import partitioning as axes
from model.config import LOCAL, GemmaConfig
from model.dense import dense

# Every parameter is declared with its logical axis names (`model.partitioning`): `init` then
# also returns the `params_axes` collection that T5X's partitioner and our mesh code read.
param_with_axes = nn_partitioning.param_with_axes

# Added to masked attention logits. Finite (unlike -inf) so a row with every key masked
# (padding queries) gives a uniform distribution instead of NaN.
NEG_INF = -2.3819763e38


class RMSNorm(nn.Module):
  """`x / sqrt(mean(x^2) + eps) * (1 + scale)`, computed in float32.

  The `1 +` is Gemma's: checkpoints store `scale` around 0 (HF initialises it to zeros).
  """
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = param_with_axes("scale", nn.initializers.zeros_init(), (x.shape[-1],), jnp.float32,
                            axes=(axes.EMBED,))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (normed * (1.0 + scale)).astype(x.dtype)


class Embedder(nn.Module):
  """Token embedding scaled by sqrt(D) on the way in; the same table maps back to logits.

  encode: int [B, T] -> [B, T, D];  decode: [B, T, D] -> float32 [B, T, V].
  """
  vocab_size: int
  embed_dim: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    # std 1/sqrt(D): after the sqrt(D) input scaling, activations start at unit scale, and the
    # tied read-out gives unit-scale logits for normalised hidden states.
    self.input_embedding = param_with_axes(
        "input_embedding", nn.initializers.normal(stddev=self.embed_dim ** -0.5),
        (self.vocab_size, self.embed_dim), jnp.float32, axes=(axes.VOCAB, axes.EMBED))

  def encode(self, tokens: jax.Array) -> jax.Array:
    x = jnp.take(self.input_embedding, tokens, axis=0)
    return (x * jnp.sqrt(jnp.float32(self.embed_dim))).astype(self.dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    # [..., D] -> float32 [..., V]: [B, T, D] for a whole batch, [N, D] for selected positions.
    return dense(x, self.input_embedding, self.dtype, jnp.float32, w_transposed=True)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotary embedding, "half split" layout: dims [0, H/2) pair with [H/2, H).

  x: [B, T, heads, H], positions: int [B, T] -> [B, T, heads, H].

  >>> apply_rope(jnp.ones((1, 1, 1, 2)), jnp.array([[0]]), 10_000.0)   # position 0: identity
  Array([[[[1., 1.]]]], dtype=float32)
  """
  head_dim = x.shape[-1]
  # Same expression as the reference implementations, so float32 rounding agrees.
  inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq          # [B, T, H/2]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class FeedForward(nn.Module):
  """GeGLU: `down(gelu_tanh(x @ gate) * (x @ up))`, [B, T, D] -> [B, T, D]."""
  embed_dim: int
  hidden_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.lecun_normal()
    d, f = self.embed_dim, self.hidden_dim
    gate = param_with_axes("gate", init, (d, f), jnp.float32, axes=(axes.EMBED, axes.MLP))
    up = param_with_axes("up", init, (d, f), jnp.float32, axes=(axes.EMBED, axes.MLP))
    down = param_with_axes("down", init, (f, d), jnp.float32, axes=(axes.MLP, axes.EMBED))
    h = jax.nn.gelu(dense(x, gate, self.dtype), approximate=True) * dense(x, up, self.dtype)
    return dense(h, down, self.dtype)


def causal_mask(
    batch: int,
    length: int,
    *,
    segment_ids: Optional[jax.Array] = None,
    causal_attention: Optional[jax.Array] = None,
    window: Optional[int] = None,
) -> jax.Array:
  """Boolean [B, T, T] mask of a full (uncached) pass; True = the query may see the key.

  Causal; plus a bidirectional prefix where `causal_attention` is 1 on both query and key;
  restricted to the same segment of a packed row; for local layers to keys less than `window`
  positions away.

  >>> causal_mask(1, 3, segment_ids=jnp.array([[1, 1, 2]]))[0].astype(int)
  Array([[1, 0, 0],
         [1, 1, 0],
         [0, 0, 1]], dtype=int32)
  """
  idx = jnp.arange(length)
  mask = jnp.broadcast_to(idx[:, None] >= idx[None, :], (batch, length, length))
  if causal_attention is not None:
    prefix = causal_attention.astype(bool)
    mask = mask | (prefix[:, :, None] & prefix[:, None, :])
  if segment_ids is not None:
    mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
  if window is not None:
    mask = mask & (jnp.abs(idx[:, None] - idx[None, :]) < window)[None]
  return mask


def cached_mask(
    query_positions: jax.Array,
    cache_length: int,
    *,
    bidirectional_keys: Optional[jax.Array] = None,
    bidirectional_queries: Optional[jax.Array] = None,
    window: Optional[int] = None,
) -> jax.Array:
  """Boolean [B, T, S] mask against a cache whose slot s holds position s.

  query_positions: int [B, T]. Slots after a query's position hold padding or stale keys and
  are never visible, so the cache needs no separate validity mask.

  >>> cached_mask(jnp.array([[1]]), 4).astype(int)
  Array([[[1, 1, 0, 0]]], dtype=int32)
  """
  slots = jnp.arange(cache_length)[None, None, :]
  q = query_positions[:, :, None]
  mask = slots <= q
  if bidirectional_keys is not None:
    queries = bidirectional_queries.astype(bool)[:, :, None]
    mask = mask | (queries & bidirectional_keys.astype(bool)[:, None, :])
  if window is not None:
    mask = mask & (jnp.abs(q - slots) < window)
  return mask


def _write_at(buffer: jax.Array, update: jax.Array, index: jax.Array, axis: int = 1) -> jax.Array:
  """Per-example `buffer[b, ..., index[b]:index[b] + T, ...] = update[b]` along `axis`."""
  def one(buf, upd, i):
    starts = tuple(i if d == axis - 1 else 0 for d in range(buf.ndim))
    return jax.lax.dynamic_update_slice(buf, upd.astype(buf.dtype), starts)
  return jax.vmap(one)(buffer, update, index)


def cache_keys(key: jax.Array) -> jax.Array:
  """New keys [B, T, K, H] in the cache's key layout [B, K, H, T] (see `_attend_one_query`)."""
  return key.transpose(0, 2, 3, 1)


def cache_values(value: jax.Array) -> jax.Array:
  """New values [B, T, K, H] in the cache's value layout [B, K, T, H]."""
  return value.transpose(0, 2, 1, 3)


def _softcap(logits: jax.Array, cap: Optional[float]) -> jax.Array:
  return logits if cap is None else jnp.tanh(logits / cap) * cap


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def capped_masked_softmax(logits: jax.Array, mask: jax.Array, cap: Optional[float]) -> jax.Array:
  """`softmax(where(mask, softcap(logits), NEG_INF))` over the last axis, float32, with the
  gradient written out: `p * (g - sum(g * p))` times the softcap's `1 - tanh^2`, zero where
  masked. The same values as autodiff of the composition, in two fused passes over the
  [B, K, G, T, S] scores where autodiff's takes ~1.7x the time (measured on the recipe model).

  logits float32 [B, K, G, T, S], mask bool broadcastable to it.

  >>> p = capped_masked_softmax(jnp.array([[0.0, 1.0, 5.0]]), jnp.array([[True, True, False]]),
  ...                           None)
  >>> [round(v, 4) for v in p[0].tolist()]
  [0.2689, 0.7311, 0.0]
  """
  return _capped_masked_softmax_fwd(logits, mask, cap)[0]


def _capped_masked_softmax_fwd(logits, mask, cap):
  probs = jax.nn.softmax(jnp.where(mask, _softcap(logits, cap), NEG_INF), axis=-1)
  return probs, (probs, logits, mask)


def _capped_masked_softmax_bwd(cap, residuals, g):
  probs, logits, mask = residuals
  d_capped = probs * (g - jnp.sum(g * probs, axis=-1, keepdims=True))
  if cap is not None:   # d/dx cap * tanh(x / cap) = 1 - tanh(x / cap)^2, recomputed
    d_capped = d_capped * (1.0 - jnp.square(jnp.tanh(logits / cap)))
  return jnp.where(mask, d_capped, 0.0), None


capped_masked_softmax.defvjp(_capped_masked_softmax_fwd, _capped_masked_softmax_bwd)


def _attend_one_query(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                      softcap: Optional[float]) -> jax.Array:
  """Attention of one new token per row over the cache (a decoding step), in float32.

  query [B, K, G, H], key [B, K, H, S], value [B, K, S, H], mask bool [B, S] -> [B, K, G, H].
  The same arithmetic as the batched matmuls of the full pass, written as products and sums
  that XLA fuses into passes over the cache as it is laid out (matmuls would run B * K tiny
  products). The cache's layout is chosen for these sums: both reduce over a non-minor axis
  (H for the logits, S for the output), so each pass adds whole contiguous rows of S or H
  values. With the full pass's layout [B, S, K, H] the logits were a sum over the minor axis,
  one short horizontal reduction per slot: this function alone took 1.5x the time at batch 1,
  2.5x at batch 8 and 1.6x at 256 rows (small_gemma2's heads, 144 slots). Whole greedy
  decoding at batch 8 took 1.12-1.27x the time, at batch 1 the same within the noise
  (`benchmarks/model.py`, three pairs of runs one after the other; README, "The model").
  """
  f32 = jnp.float32
  logits = jnp.sum(query.astype(f32)[..., None] * key.astype(f32)[:, :, None], axis=3)
  logits = jnp.where(mask[:, None, None, :], _softcap(logits, softcap), NEG_INF)  # [B, K, G, S]
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.sum(probs[..., None] * value.astype(f32)[:, :, None], axis=3)


def _attend_shared_prompt(query: jax.Array, prompt_key: jax.Array, prompt_value: jax.Array,
                          prompt_mask: jax.Array, key: jax.Array, value: jax.Array,
                          mask: jax.Array, softcap: Optional[float]) -> jax.Array:
  """`_attend_one_query` for beam search, whose R = B * beams rows share B prompts: each
  prompt's keys are stored once, not once per beam.

  query [R, K, G, H] (a prompt's beams adjacent); prompt_key [B, K, H, P], prompt_value
  [B, K, P, H], prompt_mask bool [B, beams, P]; key [R, K, H, M] / value [R, K, M, H] (the
  generated tokens, in the cache's layout), mask bool [R, M] -> [R, K, G, H]. One softmax
  over the prompt's and the generated slots together, so the result is attention over their
  concatenation. The beams then read the
  prompt's keys once per step between them and reorder only the generated part of the cache
  when they change parents (`model.beams`). A prompt's beams * G queries per key head meet its
  keys in two matrix products of the form XLA hands to its library kernels (the left operand
  contracted over its last axis, the right over its first: hence the transposed prompt_key).
  """
  f32 = jnp.float32
  rows, kv, groups, head = query.shape
  batch, prompt_slots = prompt_key.shape[0], prompt_key.shape[-1]
  beams = rows // batch
  q = query.astype(f32).reshape(batch, beams, kv, groups, head)
  q = q.transpose(0, 2, 1, 3, 4).reshape(batch, kv, beams * groups, head)
  prompt_logits = jnp.einsum("bkqh,bkhp->bkqp", q, prompt_key.astype(f32))
  prompt_mask = jnp.repeat(prompt_mask, groups, axis=1)[:, None]              # [B, 1, beams*G, P]
  prompt_logits = jnp.where(prompt_mask, _softcap(prompt_logits, softcap), NEG_INF)
  logits = jnp.sum(query.astype(f32)[..., None] * key.astype(f32)[:, :, None], axis=3)
  logits = jnp.where(mask[:, None, None, :], _softcap(logits, softcap), NEG_INF)  # [R, K, G, M]
  logits = logits.reshape(batch, beams, kv, groups, -1).transpose(0, 2, 1, 3, 4)
  logits = logits.reshape(batch, kv, beams * groups, -1)                     # [B, K, beams*G, M]
  probs = jax.nn.softmax(jnp.concatenate([prompt_logits, logits], axis=-1), axis=-1)
  from_prompt = jnp.einsum("bkqp,bkph->bkqh", probs[..., :prompt_slots],
                           prompt_value.astype(f32))                          # [B, K, beams*G, H]
  from_prompt = from_prompt.reshape(batch, kv, beams, groups, head).transpose(0, 2, 1, 3, 4)
  generated = probs[..., prompt_slots:].reshape(batch, kv, beams, groups, -1)
  generated = generated.transpose(0, 2, 1, 3, 4).reshape(rows, kv, groups, -1)  # [R, K, G, M]
  from_generated = jnp.sum(generated[..., None] * value.astype(f32)[:, :, None], axis=3)
  return from_prompt.reshape(query.shape) + from_generated


class Attention(nn.Module):
  """Multi-query / grouped-query self-attention with RoPE, optional soft-capping and a KV cache.

  Without `cached`: keys are this call's tokens, `positions` and `mask` ([B, T, T]) are given.
  With `cached` (T5X's `decode` / `prefill`): the call's T tokens are written into the `cache`
  collection (`cached_key` [B, K, H, S], `cached_value` [B, K, S, H]: the layout of
  `_attend_one_query`) at each example's `cache_index` (slot = position), the queries attend to
  the whole cache, and `cache_index` advances by `advance` ([B], default T). When the cache
  does not exist yet it is created with `cache_length` slots and the call behaves as uncached
  (T5X initialises a cache that way).

  Beam search's layout (`model.beams`) adds `prompt_key` [B, K, H, P], `prompt_value`
  [B, K, P, H] and `prompt_length` [B] to the cache: the prompts, once per prompt, while
  `cached_key` [B * beams, K, H, M] / `cached_value` [B * beams, K, M, H] hold each beam's
  generated tokens from slot 0 and `cache_index` counts them; a token's position is its
  prompt's length + its slot.
  That layout decodes one token per call.
  """
  config: GemmaConfig
  attn_type: str

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      positions: jax.Array,
      mask: Optional[jax.Array],
      *,
      cached: bool = False,
      cache_length: Optional[int] = None,
      advance: Optional[jax.Array] = None,
      bidirectional: Optional[jax.Array] = None,
  ) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim
    scaling = nn.initializers.variance_scaling
    init_in = scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2))
    init_out = scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2)
    q_axes = (axes.EMBED, axes.HEADS, axes.KV)
    kv_axes = (axes.EMBED, axes.KV_HEADS, axes.KV)
    wq = param_with_axes("q", init_in, (d, n, h), jnp.float32, axes=q_axes)
    wk = param_with_axes("k", init_in, (d, k, h), jnp.float32, axes=kv_axes)
    wv = param_with_axes("v", init_in, (d, k, h), jnp.float32, axes=kv_axes)
    wo = param_with_axes("o", init_out, (n, h, d), jnp.float32,
                         axes=(axes.HEADS, axes.KV, axes.EMBED))
    window = cfg.sliding_window_size if self.attn_type == LOCAL else None

    batch, length = x.shape[:2]
    from_cache = False   # keys [B, S, K, H] of this call, or the cache's layout (see above)
    # [B, T, D] x [D, heads * H]: the head axes flattened into one matrix column axis.
    query = dense(x, wq.reshape(d, n * h), dtype).reshape(batch, length, n, h)
    key = dense(x, wk.reshape(d, k * h), dtype).reshape(batch, length, k, h)
    value = dense(x, wv.reshape(d, k * h), dtype).reshape(batch, length, k, h)

    if cached and self.has_variable("cache", "prompt_key"):
      return self._decode_after_shared_prompt(query, key, value, wo, window)
    if cached and self.has_variable("cache", "cached_key"):
      cache_index = self.variable("cache", "cache_index", jnp.zeros, (), jnp.int32)
      index = cache_index.value
      positions = index[:, None] + jnp.arange(length)[None, :]
      query, key, value = self._append_to_cache(query, key, value, positions, index)
      from_cache = True
      slots = key.shape[-1]
      bidir_keys = None
      if bidirectional is not None:
        bidir_keys = _write_at(jnp.zeros((batch, slots), bool), bidirectional.astype(bool), index)
      mask = cached_mask(positions, slots, bidirectional_keys=bidir_keys,
                         bidirectional_queries=bidirectional, window=window)
      cache_index.value = index + (length if advance is None else jnp.asarray(advance, jnp.int32))
    else:
      if cached:  # first (initialising) call: create an empty cache, compute as uncached
        slots = cache_length or length
        self.variable("cache", "cached_key", jnp.zeros, (batch, k, h, slots), dtype)
        self.variable("cache", "cached_value", jnp.zeros, (batch, k, slots, h), dtype)
        self.variable("cache", "cache_index", jnp.zeros, (batch,), jnp.int32)
      query = apply_rope(query, positions, cfg.rope_base)
      key = apply_rope(key, positions, cfg.rope_base)

    query = query * jnp.asarray(cfg.query_pre_attn_scalar ** -0.5, dtype)
    grouped = query.reshape(batch, length, k, n // k, h)   # head n = kv_head * G + g
    if from_cache and length == 1:
      encoded = _attend_one_query(grouped[:, 0], key, value, mask[:, 0], cfg.attn_logit_softcap)
      encoded = encoded.astype(dtype).reshape(batch, 1, n, h)
    else:
      compute = dtype
      if from_cache:
        # A prompt block against the cache (once per prompt), in the full pass's layout and in
        # float32: XLA:CPU folds the transposes into the products, and for bfloat16 operands
        # one of the forms it picks runs on its generic kernel, which fails at run time.
        key, value = key.transpose(0, 3, 1, 2), value.transpose(0, 2, 1, 3)
        compute = jnp.float32
      logits = jnp.einsum("btkgh,bskh->bkgts", grouped.astype(compute), key.astype(compute),
                          preferred_element_type=jnp.float32)
      probs = capped_masked_softmax(logits, mask[:, None, None], cfg.attn_logit_softcap)
      probs = probs.astype(compute)
      encoded = jnp.einsum("bkgts,bskh->btkgh", probs, value.astype(compute))
      encoded = encoded.astype(dtype).reshape(batch, length, n, h)
    return dense(encoded.reshape(batch, length, n * h), wo.reshape(n * h, d), dtype)

  def _append_to_cache(self, query, key, value, positions, index):
    """RoPE at `positions` [B, T]; the new keys / values [B, T, K, H] written into the cache
    at each row's `index` [B] -> (rotated query, the cache's keys [B, K, H, S] and values
    [B, K, S, H] with them)."""
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    cached_key = self.variable("cache", "cached_key", jnp.zeros, (), dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, (), dtype)
    query = apply_rope(query, positions, cfg.rope_base)
    key = apply_rope(key, positions, cfg.rope_base)
    cached_key.value = _write_at(cached_key.value, cache_keys(key), index, axis=3)
    cached_value.value = _write_at(cached_value.value, cache_values(value), index, axis=2)
    return query, cached_key.value, cached_value.value

  def _decode_after_shared_prompt(self, query, key, value, wo, window):
    """One new token per beam against the beam layout of the cache (see the class)."""
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    rows, length, n, h = query.shape
    if length != 1:
      raise ValueError(f"the beam layout of the cache decodes one token per call, got {length}")
    prompt_key = self.get_variable("cache", "prompt_key")
    prompt_value = self.get_variable("cache", "prompt_value")
    prompt_length = self.get_variable("cache", "prompt_length")                 # [B]
    cache_index = self.variable("cache", "cache_index", jnp.zeros, (), jnp.int32)
    batch = prompt_key.shape[0]
    beams = rows // batch
    index = cache_index.value                                                   # [R]
    start = jnp.repeat(prompt_length, beams)                                    # [R]
    positions = (start + index)[:, None]
    query, key, value = self._append_to_cache(query, key, value, positions, index)
    gen_slots = jnp.arange(key.shape[-1])[None, :]
    mask = gen_slots <= index[:, None]                                          # [R, M]
    prompt_slots = jnp.arange(prompt_key.shape[-1])[None, :]
    prompt_mask = prompt_slots < start[:, None]                                 # [R, P]
    if window is not None:
      mask = mask & (index[:, None] - gen_slots < window)
      prompt_mask = prompt_mask & (positions - prompt_slots < window)
    cache_index.value = index + 1
    query = query * jnp.asarray(cfg.query_pre_attn_scalar ** -0.5, dtype)
    k = cfg.num_kv_heads
    encoded = _attend_shared_prompt(
        query.reshape(rows, k, n // k, h), prompt_key, prompt_value,
        prompt_mask.reshape(batch, beams, -1), key, value, mask, cfg.attn_logit_softcap)
    return dense(encoded.astype(dtype).reshape(rows, 1, n * h), wo.reshape(n * h, -1), dtype)


class Block(nn.Module):
  """One residual layer: norm, attention, (post-norm), add; norm, GeGLU, (post-norm), add."""
  config: GemmaConfig
  attn_type: str

  @nn.compact
  def __call__(self, x, positions, mask, *, enable_dropout=False, **cache_kwargs):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    drop = nn.Dropout(rate=cfg.dropout_rate, deterministic=not enable_dropout)
    h = RMSNorm(cfg.rms_norm_eps, name="pre_attention_norm")(x)
    h = Attention(cfg, self.attn_type, name="attn")(h, positions, mask, **cache_kwargs)
    if cfg.use_post_attn_norm:
      h = RMSNorm(cfg.rms_norm_eps, name="post_attention_norm")(h)
    x = x + drop(h)
    h = RMSNorm(cfg.rms_norm_eps, name="pre_ffw_norm")(x)
    h = FeedForward(cfg.embed_dim, cfg.hidden_dim, dtype, name="mlp")(h)
    if cfg.use_post_ffw_norm:
      h = RMSNorm(cfg.rms_norm_eps, name="post_ffw_norm")(h)
    return x + drop(h)
