"""The Gemma decoder as a Flax module with T5X's decoder-only call signature, and `forward`.

>>> import jax, jax.numpy as jnp
>>> from model.config import tiny_gemma2
>>> cfg = tiny_gemma2()
>>> shapes = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.PRNGKey(0))  # no compute
>>> shapes['embedder']['input_embedding'].shape, shapes['layer_0']['attn']['q'].shape
((4096, 64), (64, 4, 16))
>>> sorted(shapes['layer_0'])
['attn', 'mlp', 'post_attention_norm', 'post_ffw_norm', 'pre_attention_norm', 'pre_ffw_norm']

Parameter tree (all float32): `embedder/input_embedding` [V, D], `final_norm/scale` [D], and per
layer `layer_{i}/{pre_attention_norm,post_attention_norm,pre_ffw_norm,post_ffw_norm}/scale` [D],
`layer_{i}/attn/{q [D, N, H], k [D, K, H], v [D, K, H], o [N, H, D]}`,
`layer_{i}/mlp/{gate [D, F], up [D, F], down [F, D]}` (post-norms only in Gemma 2).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from model.config import LOCAL, GemmaConfig
from model.layers import Block, Embedder, RMSNorm, causal_mask


class Transformer(nn.Module):
  """Gemma decoder: tokens [B, T] -> float32 logits [B, T, V].

  The signature is T5X's decoder-only one: `decoder_target_tokens` is accepted and ignored (T5X
  passes it; padding is handled by causality and segment ids), `decoder_segment_ids` /
  `decoder_positions` describe packed rows, `decoder_causal_attention` (1 on the prefix) makes the
  prefix bidirectional. `decode=True` (one or more new tokens appended to the cache) and
  `prefill=True` (a padded prompt written from slot 0, `prefill_lengths` [B] of it kept) use
  the `cache` collection; see `layers.Attention`.
  """
  config: GemmaConfig

  @nn.compact
  def __call__(
      self,
      decoder_input_tokens: jax.Array,
      decoder_target_tokens: Optional[jax.Array] = None,
      decoder_segment_ids: Optional[jax.Array] = None,
      decoder_positions: Optional[jax.Array] = None,
      decoder_causal_attention: Optional[jax.Array] = None,
      *,
      enable_dropout: bool = False,
      decode: bool = False,
      max_decode_length: Optional[int] = None,
      prefill: bool = False,
      prefill_lengths: Optional[jax.Array] = None,
      logit_indices: Optional[jax.Array] = None,
  ) -> jax.Array:
    """logits [B, T, V]; with `logit_indices` (int [N], flat indices into B*T) only those
    positions' logits [N, V]: the vocabulary projection and softcap are the largest part of
    a small model's step, and a loss needs them only where it has weight."""
    del decoder_target_tokens
    cfg = self.config
    tokens = decoder_input_tokens.astype(jnp.int32)
    batch, length = tokens.shape
    embedder = Embedder(cfg.vocab_size, cfg.embed_dim, jnp.dtype(cfg.dtype), name="embedder")
    x = embedder.encode(tokens)

    cached = decode or prefill
    if decoder_positions is None:
      positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    else:
      positions = decoder_positions.astype(jnp.int32)
    masks = {}
    for attn_type in set(cfg.attention_types):
      window = cfg.sliding_window_size if attn_type == LOCAL else None
      masks[attn_type] = causal_mask(batch, length, segment_ids=decoder_segment_ids,
                                     causal_attention=decoder_causal_attention, window=window)
    cache_kwargs = {}
    if cached:
      cache_kwargs = dict(cached=True, cache_length=max_decode_length, advance=prefill_lengths,
                          bidirectional=decoder_causal_attention)
    for i, attn_type in enumerate(cfg.attention_types):
      x = Block(cfg, attn_type, name=f"layer_{i}")(
          x, positions, masks[attn_type], enable_dropout=enable_dropout, **cache_kwargs)
    x = RMSNorm(cfg.rms_norm_eps, name="final_norm")(x)
    if logit_indices is not None:
      x = jnp.take(x.reshape(batch * length, x.shape[-1]), logit_indices, axis=0)
    logits = embedder.decode(x)
    if cfg.final_logit_softcap is not None:
      logits = jnp.tanh(logits / cfg.final_logit_softcap) * cfg.final_logit_softcap
    return logits


def init_params(config: GemmaConfig, rng: jax.Array, length: int = 1) -> dict:
  """Fresh parameters: `init_params(tiny_gemma1(), jax.random.PRNGKey(0))['embedder']`."""
  tokens = jnp.ones((1, length), jnp.int32)
  # Jitted: eager Flax init dispatches op by op and is slow for anything but toy sizes.
  return jax.jit(Transformer(config).init)(rng, tokens)["params"]


def init_cache(config: GemmaConfig, batch_size: int, cache_length: int) -> dict:
  """An empty `cache` collection: per layer `cached_key` [B, K, H, S], `cached_value`
  [B, K, S, H] (the layout of `layers._attend_one_query`) and `cache_index` [B] (next free
  slot = number of cached tokens, per example).

  >>> from model.config import tiny_gemma1
  >>> c = init_cache(tiny_gemma1(), 2, 8)
  >>> c['layer_0']['attn']['cached_key'].shape, c['layer_0']['attn']['cache_index'].tolist()
  ((2, 1, 16, 8), [0, 0])
  """
  dtype = jnp.dtype(config.dtype)
  batch, kv, head = batch_size, config.num_kv_heads, config.head_dim
  return {
      f"layer_{i}": {"attn": {
          "cached_key": jnp.zeros((batch, kv, head, cache_length), dtype),
          "cached_value": jnp.zeros((batch, kv, cache_length, head), dtype),
          "cache_index": jnp.zeros((batch_size,), jnp.int32),
      }} for i in range(config.num_layers)
  }


def cache_slots(cache: dict) -> int:
  """The slots S per row of a `cache` collection (`init_cache`'s layout: keys [B, K, H, S]).

  >>> from model.config import tiny_gemma1
  >>> cache_slots(init_cache(tiny_gemma1(), 2, 8))
  8
  """
  return cache["layer_0"]["attn"]["cached_key"].shape[-1]


@functools.partial(jax.jit, static_argnums=0)
def forward(config: GemmaConfig, params, tokens: jax.Array) -> jax.Array:
  """Plain causal forward pass, no cache: int [B, T] -> float32 logits [B, T, V].

  >>> import jax, jax.numpy as jnp
  >>> from model.config import tiny_gemma2
  >>> cfg = tiny_gemma2()
  >>> params = init_params(cfg, jax.random.PRNGKey(0))
  >>> logits = forward(cfg, params, jnp.array([[2, 651, 3999]]))
  >>> logits.shape, logits.dtype
  ((1, 3, 4096), dtype('float32'))
  >>> int(logits[0, -1].argmax())   # next-token guess (of untrained parameters)
  3999
  """
  return Transformer(config).apply({"params": params}, tokens)
