"""Gemma 1/2 model configuration: one frozen dataclass and named presets.

Pure Python (no JAX, no TensorFlow), hashable, so a config can be a static argument of `jax.jit`.

>>> cfg = gemma2_2b()
>>> cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
(26, 2304, 8, 4, 256)
>>> cfg.attention_types[:3]
('local', 'global', 'local')
>>> tiny_gemma1().version, hash(tiny_gemma1()) == hash(tiny_gemma1())
(1, True)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple

# The token-id contract (pad 0, eos 1, bos 2, `<end_of_turn>` 107), from the one light module
# that holds it (standard library only: no TensorFlow, registers nothing).
from gemma_seqio.special_tokens import (BOS_ID, END_OF_TURN_ID, EOS_ID, PAD_ID,  # noqa: F401
                                        START_OF_TURN_ID, STOP_IDS)

GLOBAL = "global"
LOCAL = "local"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GemmaConfig:
  """Shape and numerics of a Gemma 1 or Gemma 2 decoder.

  Attributes:
    version: 1 or 2 (Gemma 2 adds post-norms; the other Gemma 2 traits are separate fields).
    vocab_size: V, rows of the (tied) embedding table.
    embed_dim: D, the residual width.
    hidden_dim: F, the GeGLU inner width (HF `intermediate_size`).
    num_layers, num_heads (N), num_kv_heads (K, divides N), head_dim (H).
    query_pre_attn_scalar: queries are multiplied by `query_pre_attn_scalar ** -0.5`
      (Gemma 1: head_dim; Gemma 2: 256 for 2B/9B).
    attn_logit_softcap / final_logit_softcap: `cap * tanh(x / cap)` or None (Gemma 1).
    attention_types: one of 'global' / 'local' per layer; 'local' layers attend to the last
      `sliding_window_size` positions (the query's own position included).
    use_post_attn_norm / use_post_ffw_norm: Gemma 2's extra RMSNorms on the branch outputs.
    rms_norm_eps, rope_base: numerics; Gemma uses 1e-6 and 10,000.
    dtype: activation dtype name ('float32' or 'bfloat16'); parameters stay float32.
    dropout_rate: on the branch outputs, only with `enable_dropout=True` (Gemma ships 0).
  """
  version: int = 1
  vocab_size: int
  embed_dim: int
  hidden_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  query_pre_attn_scalar: float
  attn_logit_softcap: Optional[float] = None
  final_logit_softcap: Optional[float] = None
  attention_types: Tuple[str, ...] = ()
  sliding_window_size: Optional[int] = None
  use_post_attn_norm: bool = False
  use_post_ffw_norm: bool = False
  rms_norm_eps: float = 1e-6
  rope_base: float = 10_000.0
  dtype: str = "float32"
  dropout_rate: float = 0.0

  def __post_init__(self):
    if self.version not in (1, 2):
      raise ValueError(f"GemmaConfig.version must be 1 or 2, got {self.version}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even (RoPE rotates halves)")
    types = tuple(self.attention_types) or (GLOBAL,) * self.num_layers
    if len(types) != self.num_layers or set(types) - {GLOBAL, LOCAL}:
      raise ValueError(
          f"attention_types must be {self.num_layers} of 'global'/'local', got {types}")
    if LOCAL in types and not self.sliding_window_size:
      raise ValueError("'local' layers need a sliding_window_size")
    # Lists are unhashable: normalise so the config can be a jit static argument.
    object.__setattr__(self, "attention_types", types)

  @property
  def num_params(self) -> int:
    """Parameter count (the embedding counted once: it is tied to the output layer)."""
    d, f, h = self.embed_dim, self.hidden_dim, self.head_dim
    n, k = self.num_heads, self.num_kv_heads
    norms = 2 + 2 * int(self.use_post_attn_norm or self.use_post_ffw_norm)
    per_layer = d * h * (2 * n + 2 * k) + 3 * d * f + norms * d
    return self.vocab_size * d + self.num_layers * per_layer + d

  def replace(self, **changes) -> "GemmaConfig":
    """A copy with some fields changed: `tiny_gemma2().replace(num_layers=4)`.

    Changing `num_layers` alone re-derives `attention_types` (alternating if the model had
    local layers, else all global).
    """
    if "num_layers" in changes and "attention_types" not in changes:
      local = LOCAL in self.attention_types
      changes["attention_types"] = _alternating(changes["num_layers"]) if local else ()
    return dataclasses.replace(self, **changes)


def _alternating(num_layers: int) -> Tuple[str, ...]:
  # Gemma 2 starts with a local layer: (local, global, local, global, ...).
  return tuple(LOCAL if i % 2 == 0 else GLOBAL for i in range(num_layers))


def _gemma1(**kw) -> GemmaConfig:
  return GemmaConfig(version=1, query_pre_attn_scalar=float(kw["head_dim"]), **kw)


def _gemma2(*, num_layers, sliding_window_size=4096, query_pre_attn_scalar=256.0,
            **kw) -> GemmaConfig:
  return GemmaConfig(
      version=2, num_layers=num_layers, attention_types=_alternating(num_layers),
      sliding_window_size=sliding_window_size, query_pre_attn_scalar=float(query_pre_attn_scalar),
      attn_logit_softcap=50.0, final_logit_softcap=30.0,
      use_post_attn_norm=True, use_post_ffw_norm=True, **kw)


# Published shapes (Hugging Face `google/gemma-*` config.json; vocabulary of 256,000 pieces).
def gemma1_2b() -> GemmaConfig:
  return _gemma1(vocab_size=256_000, embed_dim=2048, hidden_dim=16_384, num_layers=18,
                 num_heads=8, num_kv_heads=1, head_dim=256)


def gemma1_7b() -> GemmaConfig:
  return _gemma1(vocab_size=256_000, embed_dim=3072, hidden_dim=24_576, num_layers=28,
                 num_heads=16, num_kv_heads=16, head_dim=256)


def gemma2_2b() -> GemmaConfig:
  return _gemma2(vocab_size=256_000, embed_dim=2304, hidden_dim=9216, num_layers=26,
                 num_heads=8, num_kv_heads=4, head_dim=256)


def gemma2_9b() -> GemmaConfig:
  return _gemma2(vocab_size=256_000, embed_dim=3584, hidden_dim=14_336, num_layers=42,
                 num_heads=16, num_kv_heads=8, head_dim=256)


# CPU presets: the bundled 4k vocabulary, a few layers; they train and decode in seconds.
def tiny_gemma1(vocab_size: int = 4096) -> GemmaConfig:
  return _gemma1(vocab_size=vocab_size, embed_dim=64, hidden_dim=128, num_layers=2,
                 num_heads=4, num_kv_heads=1, head_dim=16)


def tiny_gemma2(vocab_size: int = 4096) -> GemmaConfig:
  return _gemma2(vocab_size=vocab_size, embed_dim=64, hidden_dim=128, num_layers=2,
                 num_heads=4, num_kv_heads=2, head_dim=16, sliding_window_size=16,
                 query_pre_attn_scalar=16)


def small_gemma2(vocab_size: int = 4096) -> GemmaConfig:
  """~9M parameters: a model that learns the bundled tasks on a laptop CPU."""
  return _gemma2(vocab_size=vocab_size, embed_dim=256, hidden_dim=1024, num_layers=6,
                 num_heads=4, num_kv_heads=2, head_dim=64, sliding_window_size=256,
                 query_pre_attn_scalar=64)


def recipe_gemma2(vocab_size: int = 4096, *, dtype: str = "float32",
                  dropout_rate: float = 0.0) -> GemmaConfig:
  """The model of `make demo` and the quality recipe (`python -m demo.run --recipe`), also the
  T5X MODEL of `model/runner/configs/gemma_small.gin`: `small_gemma2` at half the width, 4 layers.

  >>> cfg = recipe_gemma2()
  >>> cfg.embed_dim, cfg.hidden_dim, cfg.num_layers, cfg.head_dim, cfg.attention_types
  (128, 512, 4, 32, ('local', 'global', 'local', 'global'))
  >>> round(cfg.num_params / 1e6, 2)
  1.51
  """
  return small_gemma2(vocab_size).replace(embed_dim=128, hidden_dim=512, num_layers=4,
                                          head_dim=32, query_pre_attn_scalar=32.0, dtype=dtype,
                                          dropout_rate=dropout_rate)


PRESETS = {
    "gemma1_2b": gemma1_2b, "gemma1_7b": gemma1_7b, "gemma2_2b": gemma2_2b, "gemma2_9b": gemma2_9b,
    "tiny_gemma1": tiny_gemma1, "tiny_gemma2": tiny_gemma2, "small_gemma2": small_gemma2,
    "recipe_gemma2": recipe_gemma2,
}


def get_config(name: str) -> GemmaConfig:
  """A preset by name: `get_config('tiny_gemma2').num_layers == 2`."""
  try:
    return PRESETS[name]()
  except KeyError:
    raise ValueError(f"unknown Gemma preset {name!r}; known: {sorted(PRESETS)}") from None


_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu")


def from_hf_config(hf: Mapping[str, Any]) -> GemmaConfig:
  """A Hugging Face `config.json` dict (model_type 'gemma' or 'gemma2') -> GemmaConfig.

  >>> from_hf_config({"model_type": "gemma", "vocab_size": 8, "hidden_size": 4,
  ...   "intermediate_size": 6, "num_hidden_layers": 1, "num_attention_heads": 2,
  ...   "num_key_value_heads": 1, "head_dim": 2}).query_pre_attn_scalar
  2.0
  """
  model_type = hf.get("model_type")
  if model_type not in ("gemma", "gemma2"):
    raise ValueError(f"not a Gemma 1/2 checkpoint: model_type={model_type!r}")
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
  # Only HF's Gemma 1 config reads the legacy 'gelu' as the tanh form; Gemma 2 would run exact GELU.
  if act not in _TANH_GELU or (model_type == "gemma2" and act == "gelu"):
    raise ValueError(f"unsupported activation {act!r}; Gemma uses tanh-approximate GELU")
  if hf.get("attention_bias"):
    raise ValueError("attention_bias=True is not a Gemma architecture")
  if hf.get("tie_word_embeddings") is False:
    raise ValueError("untied output embeddings are not a Gemma architecture")
  rope = hf.get("rope_parameters") or {}
  if rope.get("rope_type", "default") != "default":
    raise ValueError(f"unsupported RoPE scaling {rope!r}")
  rope_base = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
  num_heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
  common = dict(
      vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"], num_heads=num_heads,
      num_kv_heads=hf.get("num_key_value_heads", num_heads), head_dim=head_dim,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_base=rope_base)
  if model_type == "gemma":
    return GemmaConfig(version=1, query_pre_attn_scalar=float(head_dim), **common)
  layer_types = hf.get("layer_types") or [
      "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(common["num_layers"])]
  types = tuple(LOCAL if t == "sliding_attention" else GLOBAL for t in layer_types)
  window = hf.get("sliding_window")
  if window is None:
    types = (GLOBAL,) * len(types)
  return GemmaConfig(
      version=2, query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
      attn_logit_softcap=hf.get("attn_logit_softcapping"),
      final_logit_softcap=hf.get("final_logit_softcapping"),
      attention_types=types, sliding_window_size=window,
      use_post_attn_norm=True, use_post_ffw_norm=True, **common)
