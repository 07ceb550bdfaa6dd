"""`load_hf_checkpoint` + `forward` against `transformers` (torch fp32, eager attention).

Tiny random configs built locally (nothing is downloaded). Every weight is redrawn with a
large enough scale that logits are O(1..10), and the RMSNorm weights are random too: HF
initialises them to zero, which would hide a missing `1 +`.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import model  # noqa: E402
from model.decoding import Greedy, generate  # noqa: E402

VOCAB = 256
SEQ = 24


def _hf_model(version: int, kv_heads: int, seed: int = 0, **overrides):
  common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                max_position_embeddings=128, attn_implementation="eager")
  common.update(overrides)
  if version == 1:
    hf = transformers.GemmaForCausalLM(transformers.GemmaConfig(**common))
  else:
    # Window 6 < SEQ: the local layers really truncate; small caps make tanh matter;
    # query_pre_attn_scalar != head_dim catches a wrong query scale.
    common = dict(dict(sliding_window=6, query_pre_attn_scalar=24, attn_logit_softcapping=8.0,
                       final_logit_softcapping=12.0), **common)
    hf = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**common))
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in hf.named_parameters():
      std = 0.5 if "norm" in name else 0.15
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return hf.eval()


def _tokens(seed=0, batch=2, length=SEQ):
  return np.random.RandomState(seed).randint(0, VOCAB, size=(batch, length)).astype(np.int64)


def _load(hf, tmp_path):
  hf.save_pretrained(tmp_path)
  return model.load_hf_checkpoint(str(tmp_path))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_logits_match_transformers(version, kv_heads, tmp_path):
  hf = _hf_model(version, kv_heads)
  config, params = _load(hf, tmp_path)
  assert config.version == version and config.num_kv_heads == kv_heads
  tokens = _tokens()
  with torch.no_grad():
    expected = hf(torch.from_numpy(tokens)).logits.numpy()
  got = np.asarray(model.forward(config, params, jnp.asarray(tokens)))
  assert got.dtype == np.float32 and got.shape == (2, SEQ, VOCAB)
  assert np.abs(expected).max() > 1.0  # a meaningful scale, not near-zero logits
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_sliding_window_is_exercised(tmp_path):
  """Without the window, the same Gemma 2 weights give clearly different logits."""
  hf = _hf_model(2, 2)
  config, params = _load(hf, tmp_path)
  assert config.sliding_window_size < SEQ and "local" in config.attention_types
  tokens = jnp.asarray(_tokens())
  windowed = np.asarray(model.forward(config, params, tokens))
  unwindowed = np.asarray(model.forward(
      dataclasses.replace(config, attention_types=("global",) * config.num_layers), params, tokens))
  early = slice(0, config.sliding_window_size)  # positions that see no further than the window
  np.testing.assert_allclose(windowed[:, early], unwindowed[:, early], atol=1e-5)
  assert np.abs(windowed - unwindowed).max() > 1e-2


def test_greedy_decoding_matches_transformers_generate(tmp_path):
  hf = _hf_model(2, 2, seed=1)
  config, params = _load(hf, tmp_path)
  prompt = _tokens(seed=3, batch=1, length=5)
  with torch.no_grad():
    ref = hf.generate(torch.from_numpy(prompt), max_new_tokens=12, do_sample=False,
                      eos_token_id=None, pad_token_id=0)[0, 5:].numpy()
  out = generate(config, params, prompt.tolist(), max_new_tokens=12, strategy=Greedy(), stop_ids=())
  np.testing.assert_array_equal(np.asarray(out.tokens[0]), ref)


def test_tied_head_and_wrong_shapes(tmp_path):
  hf = _hf_model(1, 1)
  config, params = _load(hf, tmp_path)
  assert set(params["layer_0"]) == {"attn", "mlp", "pre_attention_norm", "pre_ffw_norm"}
  assert params["layer_0"]["attn"]["q"].shape == (64, 4, 16)
  assert params["layer_0"]["attn"]["o"].shape == (4, 16, 64)
  from model.checkpoints import hf_to_params
  from safetensors.numpy import load_file
  import glob
  tensors = load_file(glob.glob(str(tmp_path / "*.safetensors"))[0])
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] + 1.0
  with pytest.raises(ValueError, match="ties"):
    hf_to_params(config, tensors)
  bad = dict(tensors)
  del bad["lm_head.weight"]
  bad["model.layers.0.mlp.up_proj.weight"] = bad["model.layers.0.mlp.up_proj.weight"][:, :3]
  with pytest.raises(ValueError, match="shape"):
    hf_to_params(config, bad)


def test_bfloat16_checkpoint_loads_as_float32(tmp_path):
  hf = _hf_model(2, 2).to(torch.bfloat16)
  config, params = _load(hf, tmp_path)
  q = params["layer_0"]["attn"]["q"]
  assert q.dtype == np.float32
  weight = hf.model.layers[0].self_attn.q_proj.weight.detach().float().numpy()
  expected = weight.T.reshape(64, 4, 16)
  np.testing.assert_array_equal(q, expected)
