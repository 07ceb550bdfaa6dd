"""The model shape of a `t5x.train` model directory, read from the `config.gin` T5X writes there.

`model.runner.train` records its `GemmaConfig` in `<model_dir>/model_config.json`; `t5x.train` records
the whole operative gin config in `<model_dir>/config.gin`, where the shape reads

    gemma_config.GemmaConfig.embed_dim = 128
    gemma_config.GemmaConfig.dropout_rate = %DROPOUT_RATE
    DROPOUT_RATE = 0.0

or, for a preset (`gemma_small.gin`: `config = @gemma_config.recipe_gemma2()`), the preset and its
bindings (`gemma_config.recipe_gemma2.dropout_rate = %DROPOUT_RATE`).

This module parses that file with gin's own parser (nothing is imported or called, so neither
T5X nor the run's modules are needed) and rebuilds the `GemmaConfig`, so `model.runner.evaluate`,
`model.chat` and friends open a T5X run directory like one of ours.

>>> import tempfile
>>> run_dir = tempfile.TemporaryDirectory()   # stands for a `t5x.train` model dir
>>> lines = ["from __gin__ import dynamic_registration",
...          "from model import config as gemma_config",
...          "gemma_config.GemmaConfig.version = 2",
...          "gemma_config.GemmaConfig.vocab_size = 4096",
...          "gemma_config.GemmaConfig.embed_dim = 128",
...          "gemma_config.GemmaConfig.hidden_dim = 512",
...          "gemma_config.GemmaConfig.num_layers = 2",
...          "gemma_config.GemmaConfig.num_heads = 4",
...          "gemma_config.GemmaConfig.num_kv_heads = 2",
...          "gemma_config.GemmaConfig.head_dim = 32",
...          "gemma_config.GemmaConfig.query_pre_attn_scalar = 32.0",
...          "gemma_config.GemmaConfig.attention_types = ('local', 'global')",
...          "gemma_config.GemmaConfig.sliding_window_size = 256",
...          "gemma_config.GemmaConfig.dropout_rate = %DROPOUT_RATE",
...          "DROPOUT_RATE = 0.1"]
>>> with open(os.path.join(run_dir.name, CONFIG_GIN), "w") as f:
...   _ = f.write("\\n".join(lines) + "\\n")
>>> config = gemma_config_from_gin(find_gin_config(run_dir.name))
>>> config.embed_dim, config.attention_types, config.dropout_rate
(128, ('local', 'global'), 0.1)
>>> run_dir.cleanup()
"""
from __future__ import annotations

import os
from typing import Any, Dict

from model import config as config_lib
from model.config import GemmaConfig

CONFIG_GIN = "config.gin"
_CONFIGURABLE = "GemmaConfig"
_MODEL = "GemmaDecoderOnlyModel"


class _Reference:
  """A `%MACRO` or `@configurable` met while parsing (resolved afterwards, or refused)."""

  def __init__(self, name: str, is_macro: bool):
    self.name, self.is_macro = name, is_macro


class _Delegate:
  """gin's `ParserDelegate` protocol: keep references as data instead of resolving them."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    del evaluate
    return _Reference(scoped_configurable_name, is_macro=False)

  def macro(self, macro_name):
    return _Reference(macro_name, is_macro=True)


def gemma_config_from_gin(path: str) -> GemmaConfig:
  """The `GemmaConfig` bound in a T5X operative config (`config.gin` of a T5X model dir)."""
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  with open(path, encoding="utf-8") as f:
    statements = list(config_parser.ConfigParser(f, _Delegate()))
  # The configurable the model's `config` names: GemmaConfig itself or a preset function.
  target = _CONFIGURABLE
  for st in statements:
    if (isinstance(st, config_parser.BindingStatement) and st.arg_name == "config"
        and st.selector.split(".")[-1] == _MODEL and isinstance(st.value, _Reference)
        and st.value.name.split(".")[-1] in config_lib.PRESETS):
      target = st.value.name.split(".")[-1]
  macros: Dict[str, Any] = {}
  fields: Dict[str, Any] = {}
  for st in statements:
    if not isinstance(st, config_parser.BindingStatement):
      continue
    if not st.arg_name:       # `NAME = value`: a macro
      macros[st.selector] = st.value
    elif st.selector.split(".")[-1] == target and not st.scope:
      fields[st.arg_name] = st.value
  if not fields and target == _CONFIGURABLE:
    raise ValueError(f"{path} binds no GemmaConfig: is it the config.gin of a T5X run of "
                     "gemma-seqio's gin files?")

  def resolve(name, value, seen=()):
    if isinstance(value, _Reference):
      if not value.is_macro or value.name in seen or value.name not in macros:
        raise ValueError(f"{path}: {target}.{name} = {value.name!r} cannot be read as a value")
      return resolve(name, macros[value.name], seen + (value.name,))
    return value

  values = {k: resolve(k, v) for k, v in fields.items()}
  if isinstance(values.get("attention_types"), list):
    values["attention_types"] = tuple(values["attention_types"])
  build = GemmaConfig if target == _CONFIGURABLE else config_lib.PRESETS[target]
  try:
    return build(**values)
  except TypeError as e:
    raise ValueError(f"{path}: the {target} bindings do not make a GemmaConfig: {e}") from e


def find_gin_config(model_dir: str):
  """`<model_dir>/config.gin` if `model_dir` is a T5X run directory, else None."""
  path = os.path.join(model_dir, CONFIG_GIN)
  return path if os.path.isfile(path) else None
