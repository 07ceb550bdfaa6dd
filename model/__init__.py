"""Gemma 1/2 in Flax: the network, Hugging Face import, KV-cache sampling, beam search, chat.

This package is the pure library (JAX/Flax, no seqio, no TensorFlow at import). What faces seqio
and T5X (the T5X model protocol, trainer, evaluator, checkpoints, gin files) is `model.runner`.

>>> import jax, model
>>> config = model.tiny_gemma2()       # or model.load_hf_checkpoint(dir): config.json + safetensors
>>> params = model.init_params(config, jax.random.PRNGKey(0))
>>> model.forward(config, params, jax.numpy.array([[2, 651, 17]])).shape   # float32 [B, T, V]
(1, 3, 4096)
>>> model.generate(config, params, [[2, 651]], max_new_tokens=4, strategy=model.TopK(k=40),
...                rng=jax.random.PRNGKey(1)).tokens.shape
(1, 4)

Names are resolved on first use, so `import model` is cheap and never imports TensorFlow
(`ChatSampler` brings in the vocabulary, and with it TensorFlow, when it is first touched).
"""
import importlib

_EXPORTS = {
    # config
    "GemmaConfig": "model.config", "get_config": "model.config", "PRESETS": "model.config",
    "gemma1_2b": "model.config", "gemma1_7b": "model.config",
    "gemma2_2b": "model.config", "gemma2_9b": "model.config",
    "tiny_gemma1": "model.config", "tiny_gemma2": "model.config", "small_gemma2": "model.config",
    "recipe_gemma2": "model.config",
    # network
    "Transformer": "model.transformer", "forward": "model.transformer",
    "init_params": "model.transformer", "init_cache": "model.transformer",
    # checkpoints
    "load_hf_checkpoint": "model.checkpoints",
    # sampling
    "SamplingStrategy": "model.decoding", "Greedy": "model.decoding",
    "Temperature": "model.decoding", "TopK": "model.decoding", "TopP": "model.decoding",
    "generate": "model.decoding", "GenerationOutput": "model.decoding",
    "BeamSearch": "model.beams", "beam_search": "model.beams",
    "BeamOutput": "model.beams",
    # apps
    "ChatSampler": "model.chat", "ChatTurn": "model.chat", "ChatTemplate": "model.chat",
    "GEMMA_TEMPLATE": "model.chat",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'model' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
