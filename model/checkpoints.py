"""Import Hugging Face Gemma 1/2 checkpoints (`save_pretrained` directories) into our params.

A one-layer Gemma 2 directory as `save_pretrained` writes it (config.json + *.safetensors):

>>> import tempfile
>>> from safetensors.numpy import save_file
>>> hf_config = {"model_type": "gemma2", "vocab_size": 32, "hidden_size": 8,
...              "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
...              "num_key_value_heads": 1, "head_dim": 4, "sliding_window": 4}
>>> shapes = {"embed_tokens": (32, 8), "norm": (8,),
...           "layers.0.self_attn.q_proj": (8, 8), "layers.0.self_attn.k_proj": (4, 8),
...           "layers.0.self_attn.v_proj": (4, 8), "layers.0.self_attn.o_proj": (8, 8),
...           "layers.0.mlp.gate_proj": (16, 8), "layers.0.mlp.up_proj": (16, 8),
...           "layers.0.mlp.down_proj": (8, 16)}
>>> shapes.update({f"layers.0.{norm}": (8,) for norm in _NORMS[2]})
>>> tensors = {f"model.{name}.weight": np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
...            for name, shape in shapes.items()}
>>> hf_dir = tempfile.TemporaryDirectory()
>>> with open(os.path.join(hf_dir.name, "config.json"), "w") as f:
...   json.dump(hf_config, f)
>>> save_file(tensors, os.path.join(hf_dir.name, "model.safetensors"))
>>> config, params = load_hf_checkpoint(hf_dir.name)
>>> config.version, params["layer_0"]["attn"]["q"].shape         # [D, N, H]
(2, (8, 2, 4))
>>> q_proj = tensors["model.layers.0.self_attn.q_proj.weight"]  # [N*H, D]: head 1 is rows 4:8
>>> np.array_equal(params["layer_0"]["attn"]["q"][:, 1, :], q_proj[4:8].T)
True
>>> hf_dir.cleanup()

HF stores `nn.Linear` weights as [out, in]; we store einsum kernels with named head axes, so
q_proj [N*H, D] becomes q [D, N, H] and o_proj [D, N*H] becomes o [N, H, D]. Gemma 1's
`post_attention_layernorm` is the norm *before* the MLP (Gemma 2 has a separate
`pre_feedforward_layernorm`), hence the per-version name table.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, Tuple

import numpy as np

from model.config import GemmaConfig, from_hf_config

_NORMS = {
    1: {"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "pre_ffw_norm"},
    2: {"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "pre_ffw_norm", "post_feedforward_layernorm": "post_ffw_norm"},
}


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
  """All tensors of a checkpoint directory (single or sharded) as float32 numpy arrays."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top

  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise FileNotFoundError(
        f"no *.safetensors files in {path!r} (save with safe_serialization=True)")
  tensors = {}
  for file in files:
    # The 'flax' framework reads bfloat16 too (plain numpy has no bfloat16).
    with safe_open(file, framework="flax") as f:
      for name in f.keys():
        tensors[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
  return tensors


def hf_to_params(config: GemmaConfig, tensors: Dict[str, np.ndarray]) -> dict:
  """HF tensor dict (`model.layers.0.self_attn.q_proj.weight`, ...) -> our nested params."""
  d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
  tensors = {name.removeprefix("model."): value for name, value in tensors.items()}
  used = set()

  def take(name, shape):
    if name not in tensors:
      raise KeyError(f"checkpoint is missing {name!r}")
    used.add(name)
    value = tensors[name]
    if value.shape != shape:
      raise ValueError(f"{name}: shape {value.shape}, expected {shape} from config.json")
    return value

  params = {
      "embedder": {"input_embedding": take("embed_tokens.weight", (config.vocab_size, d))},
      "final_norm": {"scale": take("norm.weight", (d,))},
  }
  for i in range(config.num_layers):
    p = f"layers.{i}."
    layer = {
        "attn": {
            "q": take(p + "self_attn.q_proj.weight", (n * h, d)).T.reshape(d, n, h),
            "k": take(p + "self_attn.k_proj.weight", (k * h, d)).T.reshape(d, k, h),
            "v": take(p + "self_attn.v_proj.weight", (k * h, d)).T.reshape(d, k, h),
            "o": take(p + "self_attn.o_proj.weight", (d, n * h)).T.reshape(n, h, d),
        },
        "mlp": {
            "gate": take(p + "mlp.gate_proj.weight", (config.hidden_dim, d)).T,
            "up": take(p + "mlp.up_proj.weight", (config.hidden_dim, d)).T,
            "down": take(p + "mlp.down_proj.weight", (d, config.hidden_dim)).T,
        },
    }
    for hf_name, ours in _NORMS[config.version].items():
      layer[ours] = {"scale": take(p + hf_name + ".weight", (d,))}
    params[f"layer_{i}"] = layer

  head = tensors.get("lm_head.weight")
  if head is not None:
    used.add("lm_head.weight")
    if not np.array_equal(head, params["embedder"]["input_embedding"]):
      raise ValueError("lm_head.weight differs from embed_tokens.weight; Gemma ties them")
  unused = sorted(set(tensors) - used)
  if unused:
    raise ValueError(f"checkpoint tensors not part of a Gemma {config.version} model: {unused[:5]}")
  return {name: _to_contiguous(tree) for name, tree in params.items()}


def _to_contiguous(tree):
  if isinstance(tree, dict):
    return {k: _to_contiguous(v) for k, v in tree.items()}
  return np.ascontiguousarray(tree, dtype=np.float32)


def load_hf_checkpoint(path: str) -> Tuple[GemmaConfig, dict]:
  """A `GemmaForCausalLM` / `Gemma2ForCausalLM` `save_pretrained` directory -> (config, params).

  Params are float32 numpy arrays (pass them to `jax.device_put` or straight to `forward`).
  """
  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    config = from_hf_config(json.load(f))
  return config, hf_to_params(config, _read_safetensors(path))
