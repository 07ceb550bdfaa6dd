"""Config presets, the HF config.json mapping, and the light-import contract of `model`."""
import subprocess
import sys

import pytest

from model import config as C


def test_published_shapes():
  g1, g7 = C.gemma1_2b(), C.gemma1_7b()
  assert (g1.num_layers, g1.embed_dim, g1.num_heads, g1.num_kv_heads, g1.head_dim) == (
      18, 2048, 8, 1, 256)
  assert (g7.num_layers, g7.embed_dim, g7.num_heads, g7.num_kv_heads) == (28, 3072, 16, 16)
  g2, g9 = C.gemma2_2b(), C.gemma2_9b()
  assert (g2.num_layers, g2.embed_dim, g2.hidden_dim, g2.num_kv_heads) == (26, 2304, 9216, 4)
  assert (g9.num_layers, g9.embed_dim, g9.hidden_dim, g9.num_kv_heads) == (42, 3584, 14336, 8)
  assert g2.attention_types[:2] == ("local", "global") and g2.sliding_window_size == 4096
  assert (g2.attn_logit_softcap, g2.final_logit_softcap, g2.query_pre_attn_scalar) == (
      50.0, 30.0, 256.0)
  assert g1.attn_logit_softcap is None and g1.query_pre_attn_scalar == 256.0
  # Published parameter counts: Gemma 2 2B = 2.61B, Gemma 1 2B = 2.51B.
  assert abs(g2.num_params / 2.614e9 - 1) < 0.01
  assert abs(g1.num_params / 2.506e9 - 1) < 0.01


def test_configs_are_frozen_and_hashable():
  cfg = C.tiny_gemma2()
  assert hash(cfg) == hash(C.tiny_gemma2()) and cfg == C.tiny_gemma2()
  with pytest.raises(Exception):
    cfg.num_layers = 3  # frozen
  deeper = cfg.replace(num_layers=4)
  assert deeper.attention_types == ("local", "global", "local", "global")
  assert C.get_config("tiny_gemma1") == C.tiny_gemma1()
  with pytest.raises(ValueError, match="unknown Gemma preset"):
    C.get_config("gemma3")


def test_invalid_configs_are_refused():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    C.tiny_gemma1().replace(num_kv_heads=3)
  with pytest.raises(ValueError, match="sliding_window_size"):
    C.tiny_gemma2().replace(sliding_window_size=None)


def test_from_hf_config_gemma2():
  hf = {"model_type": "gemma2", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "query_pre_attn_scalar": 12, "sliding_window": 5, "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}
  cfg = C.from_hf_config(hf)
  assert cfg.version == 2 and cfg.attention_types == ("local", "global", "local")
  assert (cfg.sliding_window_size, cfg.query_pre_attn_scalar, cfg.num_kv_heads) == (5, 12.0, 2)
  with pytest.raises(ValueError, match="activation"):
    C.from_hf_config({**hf, "hidden_activation": "relu"})
  with pytest.raises(ValueError, match="activation"):   # exact GELU in HF's Gemma 2
    C.from_hf_config({**hf, "hidden_activation": "gelu"})
  legacy = {**hf, "model_type": "gemma", "hidden_activation": None, "hidden_act": "gelu"}
  assert C.from_hf_config(legacy).version == 1         # HF's Gemma 1 reads it as tanh GELU
  with pytest.raises(ValueError, match="Gemma 1/2"):
    C.from_hf_config({**hf, "model_type": "llama"})


def test_import_model_does_not_import_tensorflow():
  code = ("import sys, model, model.runner.t5x_model; model.generate; "
          "model.load_hf_checkpoint; print('tensorflow' in sys.modules, 'seqio' in sys.modules, "
          "'gemma_tasks' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["False", "False", "False"]
