"""model/runner/configs/*.gin: the MODEL files bind our classes without T5X; every run file parses and
binds against the real T5X (tests marked `t5x`; the runs themselves are in test_t5x_real.py).
"""
import os

import numpy as np
import pytest

from t5x_support import CONFIGS, REPO, T5X_ROOT, needs_t5x

# Each run file: the T5X script it is for, and what its command line sets.
RUN_FILES = {
    "gemma_en_de_libreoffice_finetune.gin": ("train", {"MODEL_DIR": "'/tmp/m'", "TRAIN_STEPS": 10,
                                                       "INITIAL_CHECKPOINT_PATH": "'/tmp/c'"}),
    "gemma_trivia_qa_open_finetune.gin": ("train", {"MODEL_DIR": "'/tmp/m'", "TRAIN_STEPS": 10,
                                                    "INITIAL_CHECKPOINT_PATH": "'/tmp/c'"}),
    "gemma2_2b_finetune.gin": ("train", {"MODEL_DIR": "'/tmp/m'", "TRAIN_STEPS": 10,
                                         "INITIAL_CHECKPOINT_PATH": "'/tmp/c'",
                                         "TOKENIZER_PATH": "'/tmp/tokenizer.model'"}),
    "gemma_en_de_libreoffice_eval.gin": ("evaluate", {"CHECKPOINT_PATH": "'/tmp/c'",
                                                      "EVAL_OUTPUT_DIR": "'/tmp/e'"}),
    "gemma_trivia_qa_open_eval.gin": ("evaluate", {"CHECKPOINT_PATH": "'/tmp/c'",
                                                   "EVAL_OUTPUT_DIR": "'/tmp/e'"}),
    "gemma2_2b_eval.gin": ("evaluate", {"CHECKPOINT_PATH": "'/tmp/c'", "EVAL_OUTPUT_DIR": "'/tmp/e'",
                                        "TOKENIZER_PATH": "'/tmp/tokenizer.model'"}),
    "gemma_en_de_libreoffice_infer.gin": ("infer", {"CHECKPOINT_PATH": "'/tmp/c'",
                                                    "INFER_OUTPUT_DIR": "'/tmp/i'"}),
    "gemma_trivia_qa_open_infer.gin": ("infer", {"CHECKPOINT_PATH": "'/tmp/c'",
                                                 "INFER_OUTPUT_DIR": "'/tmp/i'"}),
}


def test_every_run_file_is_tested():
  top = {f for f in os.listdir(CONFIGS) if f.endswith(("_finetune.gin", "_eval.gin", "_infer.gin"))}
  assert top == set(RUN_FILES)


@pytest.mark.t5x
@needs_t5x
@pytest.mark.parametrize("name", sorted(RUN_FILES))
def test_run_file_binds_under_real_t5x(name, monkeypatch):
  """Parsed as `python -m t5x.<script>` parses it: the script's function is `__main__.<fn>`.

  Finetune files: T5X logs `model.runner.optim`'s schedule and partitions with `model.partitioning`'s
  rules; every file binds our model with float32 restores.
  """
  import importlib  # noqa: PLC0415
  import sys  # noqa: PLC0415
  import gin  # noqa: PLC0415
  script, bindings = RUN_FILES[name]
  fn = getattr(importlib.import_module(f"t5x.{'eval' if script == 'evaluate' else script}"), script)
  monkeypatch.setattr(sys.modules["__main__"], script, fn, raising=False)
  from model import partitioning  # noqa: PLC0415
  from model.runner import optim  # noqa: PLC0415
  gin.clear_config(clear_constants=True)
  try:
    gin.add_config_file_search_path(REPO)
    gin.add_config_file_search_path(T5X_ROOT)
    gin.parse_config_files_and_bindings([os.path.join(CONFIGS, name)],
                                        [f"{k} = {v}" for k, v in bindings.items()])
    assert gin.query_parameter("utils.RestoreCheckpointConfig.dtype") == "float32"
    rules = gin.query_parameter("t5x_partitioner.PjitPartitioner.logical_axis_rules")
    built_rules = rules.scoped_configurable_fn()
    assert dict(built_rules)["heads"] == "model"
    assert built_rules in (partitioning.logical_axis_rules(),
                           partitioning.logical_axis_rules(fsdp=True))
    if script == "train":
      lr_fn = gin.query_parameter("trainer.Trainer.learning_rate_fn").scoped_configurable_fn()
      peak = gin.query_parameter("%LEARNING_RATE")
      warmup = gin.query_parameter("%WARMUP_STEPS")
      expected = optim.schedule(peak, total_steps=10, warmup_steps=warmup,
                                end_factor=gin.query_parameter("%END_FACTOR"))
      for step in range(10):
        np.testing.assert_allclose(float(lr_fn(step)), float(expected(step)), rtol=1e-6)
  finally:
    gin.clear_config(clear_constants=True)


def test_model_gin_builds_our_model_and_trains_a_step():
  import gin
  import jax
  gin.clear_config(clear_constants=True)
  try:
    gin.add_config_file_search_path(REPO)
    gin.parse_config_files_and_bindings(
        [os.path.join(CONFIGS, "gemma_small.gin")],
        ["OPTIMIZER = None", "DROPOUT_RATE = 0.0"])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config(clear_constants=True)
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  assert isinstance(model, GemmaDecoderOnlyModel)
  cfg = model.config
  assert (cfg.version, cfg.vocab_size, cfg.num_layers) == (2, 4096, len(cfg.attention_types))
  assert model.output_vocabulary.vocab_size == 4096
  params = model.get_initial_variables(jax.random.PRNGKey(0), {"decoder_input_tokens": (1, 8)})
  batch = {"decoder_input_tokens": np.array([[2, 5, 6, 7]]),
           "decoder_target_tokens": np.array([[5, 6, 7, 107]]),
           "decoder_loss_weights": np.array([[0, 0, 1, 1]])}
  loss, _ = model.loss_fn(params["params"], batch, None)
  assert np.isfinite(float(loss))


def test_gin_model_is_the_recipe_preset():
  """gemma_small.gin's MODEL is `model.config.recipe_gemma2()` (`--preset recipe_gemma2`, the
  model `make demo` trains), with the run file's DROPOUT_RATE."""
  import gin
  from model import config
  gin.clear_config(clear_constants=True)
  try:
    gin.parse_config_files_and_bindings([os.path.join(CONFIGS, "gemma_small.gin")],
                                        ["OPTIMIZER = None", "DROPOUT_RATE = 0.1"])
    cfg = gin.query_parameter("%MODEL").scoped_configurable_fn().config
  finally:
    gin.clear_config(clear_constants=True)
  assert cfg == config.recipe_gemma2(dropout_rate=0.1)
  assert cfg == config.get_config("recipe_gemma2").replace(dropout_rate=0.1)
