"""model/configs/*.gin: they parse, and bind against our classes, the way t5x.train/t5x.eval do.

T5X is not installable here (not on PyPI). The run-file tests put a stand-in `t5x` package on
sys.path: the modules and configurables our gin files name (`t5x.optimizers.OptaxWrapper`,
`t5x.utils.DatasetConfig`, ...) with T5X's parameter names, and two small run files standing in
for `t5x/configs/runs/{finetune,eval}.gin` that define the macros T5X's define. Everything of
ours (model, config, vocabulary, optimizer, JSON logger) is the real thing. The full T5X run is
skipped unless `import t5x` works.
"""
import importlib
import os
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "model", "configs")

_STUB_MODULES = {
    "__init__.py": "",
    "optimizers.py": """
        class OptaxWrapper:
          def __init__(self, optax_optimizer):
            self.optax_optimizer = optax_optimizer
        """,
    "utils.py": """
        import dataclasses
        from typing import Any, Optional

        @dataclasses.dataclass
        class DatasetConfig:
          mixture_or_task_name: Any
          task_feature_lengths: Any
          split: str
          batch_size: int
          shuffle: bool
          seed: Optional[int]
          use_cached: bool = False
          pack: bool = False
          use_custom_packing_ops: bool = False
          module: Optional[str] = None

        @dataclasses.dataclass
        class SaveCheckpointConfig:
          dtype: str = 'float32'
          period: Optional[int] = None
          keep: Optional[int] = None
          save_dataset: bool = False

        @dataclasses.dataclass
        class RestoreCheckpointConfig:
          path: Any
          mode: str = 'latest'
          dtype: Optional[str] = None

        @dataclasses.dataclass
        class CheckpointConfig:
          save: Any = None
          restore: Any = None

        def create_learning_rate_scheduler(factors='constant', base_learning_rate=0.001,
                                           warmup_steps=1000):
          return (factors, base_learning_rate, warmup_steps)
        """,
    "partitioning.py": """
        class PjitPartitioner:
          def __init__(self, num_partitions=None, model_parallel_submesh=None,
                       logical_axis_rules=None):
            self.num_partitions = num_partitions

        def standard_logical_axis_rules():
          return ()
        """,
    "trainer.py": """
        class Trainer:
          def __init__(self, num_microbatches=None, learning_rate_fn=None):
            pass
        """,
    "gin_utils.py": """
        def summarize_gin_config(*args, **kwargs):
          pass
        """,
}

# Stand-ins for T5X's run files: the macros and bindings T5X's own define, nothing of ours.
_STUB_FINETUNE = """
from __gin__ import dynamic_registration
import __main__ as train_script
import seqio
from t5x import gin_utils
from t5x import partitioning
from t5x import utils
from t5x import trainer

MODEL_DIR = %gin.REQUIRED
MIXTURE_OR_TASK_NAME = %gin.REQUIRED
TASK_FEATURE_LENGTHS = %gin.REQUIRED
MIXTURE_OR_TASK_MODULE = %gin.REQUIRED
TRAIN_STEPS = %gin.REQUIRED
INITIAL_CHECKPOINT_PATH = %gin.REQUIRED
DROPOUT_RATE = 0.1
USE_CACHED_TASKS = True
BATCH_SIZE = 128
EVAL_STEPS = 20
EVAL_PERIOD = 1000

train_script.train:
  model = %MODEL
  model_dir = %MODEL_DIR
  train_dataset_cfg = @train/utils.DatasetConfig()
  checkpoint_cfg = @utils.CheckpointConfig()
  partitioner = @partitioning.PjitPartitioner()
  trainer_cls = @trainer.Trainer
  total_steps = %TRAIN_STEPS
  eval_period = %EVAL_PERIOD
  inference_evaluator_cls = @seqio.Evaluator

train/utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'train'
  batch_size = %BATCH_SIZE
  shuffle = True
  seed = None
  use_cached = %USE_CACHED_TASKS
  pack = True
  module = %MIXTURE_OR_TASK_MODULE

utils.CheckpointConfig:
  restore = @utils.RestoreCheckpointConfig()
  save = @utils.SaveCheckpointConfig()
utils.RestoreCheckpointConfig.path = %INITIAL_CHECKPOINT_PATH
"""

_STUB_EVAL = """
from __gin__ import dynamic_registration
import __main__ as eval_script
import seqio
from t5x import partitioning
from t5x import utils

MIXTURE_OR_TASK_NAME = %gin.REQUIRED
CHECKPOINT_PATH = %gin.REQUIRED
EVAL_OUTPUT_DIR = %gin.REQUIRED
TASK_FEATURE_LENGTHS = None
MIXTURE_OR_TASK_MODULE = None

eval_script.evaluate:
  model = %MODEL
  dataset_cfg = @utils.DatasetConfig()
  partitioner = @partitioning.PjitPartitioner()
  restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()
  output_dir = %EVAL_OUTPUT_DIR
  inference_evaluator_cls = @seqio.Evaluator

utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'test'
  batch_size = 32
  shuffle = False
  seed = 42
  use_cached = False
  pack = False
  module = %MIXTURE_OR_TASK_MODULE
utils.RestoreCheckpointConfig.path = %CHECKPOINT_PATH
"""


def _t5x_installed():
  try:
    importlib.import_module("t5x")
    return True
  except ImportError:
    return False


_CALLS = {}


def _record_train(**kw):
  _CALLS["train"] = kw
  return kw


def _record_evaluate(**kw):
  _CALLS["evaluate"] = kw
  return kw


@pytest.fixture(scope="module")
def stub_t5x(tmp_path_factory):
  """The stand-in `t5x` package, importable for the whole module (gin registers classes once)."""
  if _t5x_installed():
    pytest.skip("real t5x is installed: see test_real_t5x_train_and_eval")
  root = tmp_path_factory.mktemp("stub")
  pkg = root / "t5x"
  (pkg / "configs" / "runs").mkdir(parents=True)
  for name, src in _STUB_MODULES.items():
    (pkg / name).write_text(textwrap.dedent(src))
  # Packages, as in T5X: gin also resolves includes as package resources.
  (pkg / "configs" / "__init__.py").write_text("")
  (pkg / "configs" / "runs" / "__init__.py").write_text("")
  (pkg / "configs" / "runs" / "finetune.gin").write_text(_STUB_FINETUNE)
  (pkg / "configs" / "runs" / "eval.gin").write_text(_STUB_EVAL)
  sys.path.insert(0, str(root))
  importlib.invalidate_caches()
  main = sys.modules["__main__"]
  saved = {k: getattr(main, k, None) for k in ("train", "evaluate")}
  main.train, main.evaluate = _record_train, _record_evaluate
  yield root
  for k, v in saved.items():
    if v is None:
      delattr(main, k)
    else:
      setattr(main, k, v)
  sys.path.remove(str(root))
  for name in [m for m in sys.modules if m == "t5x" or m.startswith("t5x.")]:
    del sys.modules[name]


@pytest.fixture
def gin_env(stub_t5x):
  """gin cleared, search paths = the repo + the stand-in T5X."""
  import gin
  gin.clear_config(clear_constants=True)
  gin.add_config_file_search_path(REPO)
  gin.add_config_file_search_path(str(stub_t5x))
  _CALLS.clear()
  yield gin, _CALLS
  gin.clear_config(clear_constants=True)


def _run_configured(gin, name):
  """Calls `__main__.<name>` with its gin bindings, as T5X's gin_utils.run does."""
  fn = getattr(sys.modules["__main__"], name)
  return gin.get_configurable(fn)()


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
  from model.t5x_model import GemmaDecoderOnlyModel
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


@pytest.mark.parametrize("task,lengths", [
    ("gemma_en_de_libreoffice", {"inputs": 96, "targets": 96}),
    ("gemma_trivia_qa_open", {"inputs": 64, "targets": 32})])
def test_finetune_gin_binds_model_optimizer_and_data(gin_env, task, lengths, tmp_path):
  gin, calls = gin_env
  import jax
  import optax
  from model import t5x_checkpoints
  from model.t5x_model import GemmaDecoderOnlyModel
  gin.parse_config_files_and_bindings(
      [os.path.join(CONFIGS, f"{task}_finetune.gin")],
      ["MODEL_DIR = '/tmp/t5x_run'", "INITIAL_CHECKPOINT_PATH = '/tmp/run/checkpoint_10'",
       "TRAIN_STEPS = 20"])
  kw = _run_configured(gin, "train")
  model = kw["model"]
  assert isinstance(model, GemmaDecoderOnlyModel)
  ds = kw["train_dataset_cfg"]
  assert (ds.mixture_or_task_name, ds.task_feature_lengths, ds.module) == (task, lengths,
                                                                           "gemma_tasks")
  assert ds.pack and kw["total_steps"] == 20
  restore = kw["checkpoint_cfg"].restore
  assert (restore.path, restore.mode) == ("/tmp/run/checkpoint_10", "specific")
  # T5X's OptaxWrapper around our optimizer: its state has the layout our checkpoints hold,
  # so t5x.train restores the optimizer state of a model.train checkpoint key for key.
  tx = model.optimizer_def.optax_optimizer
  assert isinstance(tx, optax.GradientTransformation)
  params = model.get_initial_variables(jax.random.PRNGKey(0),
                                       {"decoder_input_tokens": (1, 8)})["params"]
  ours = t5x_checkpoints.state_dict(params, tx.init(params), 0)
  from model import optim
  trainer_tx = optim.adamw_with_clipping(3e-3, total_steps=20)
  theirs = t5x_checkpoints.state_dict(params, trainer_tx.init(params), 0)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  # The Evaluator's loggers include the JSON logger that creates its directory.
  from model import seqio_fixes
  loggers = [r.configurable.wrapped for r in gin.query_parameter("seqio.Evaluator.logger_cls")]
  assert seqio_fixes.JSONLogger in loggers


@pytest.mark.parametrize("task", ["gemma_en_de_libreoffice", "gemma_trivia_qa_open"])
def test_eval_gin_binds_model_and_test_split(gin_env, task):
  gin, calls = gin_env
  gin.parse_config_files_and_bindings(
      [os.path.join(CONFIGS, f"{task}_eval.gin")],
      ["CHECKPOINT_PATH = '/tmp/run/checkpoint_10'", "EVAL_OUTPUT_DIR = '/tmp/run/eval'"])
  kw = _run_configured(gin, "evaluate")
  from model.t5x_model import GemmaDecoderOnlyModel
  assert isinstance(kw["model"], GemmaDecoderOnlyModel) and kw["model"].optimizer_def is None
  ds = kw["dataset_cfg"]
  assert (ds.mixture_or_task_name, ds.split, ds.pack, ds.module) == (task, "test", False,
                                                                     "gemma_tasks")
  assert kw["restore_checkpoint_cfg"].path == "/tmp/run/checkpoint_10"
  assert kw["output_dir"] == "/tmp/run/eval"


def test_gin_shape_matches_the_recipe_model(monkeypatch):
  """The gin MODEL is the shape `demo.run --recipe` trains, so T5X restores its checkpoints."""
  import gin
  monkeypatch.syspath_prepend(REPO)   # `demo` is a scripts package, not installed
  gin.clear_config(clear_constants=True)
  try:
    gin.parse_config_files_and_bindings([os.path.join(CONFIGS, "gemma_small.gin")],
                                        ["OPTIMIZER = None", "DROPOUT_RATE = 0.0"])
    cfg = gin.query_parameter("%MODEL").scoped_configurable_fn().config
  finally:
    gin.clear_config(clear_constants=True)
  from demo import run
  from model import train
  recipe = train.build_model_config(train.TrainArgs(task="t", model_dir="d", **run.RECIPE_MODEL))
  assert cfg == recipe


@pytest.mark.skipif(not _t5x_installed(), reason="t5x is not installed (not on PyPI); the gin "
                    "files are checked against stand-ins of its configurables instead")
def test_real_t5x_train_and_eval(tmp_path):  # pragma: no cover - needs T5X
  import subprocess
  import t5x
  t5x_root = os.path.dirname(os.path.dirname(t5x.__file__))
  sys.path.insert(0, REPO)
  from demo import run
  from model import train
  train.train(train.TrainArgs(task="gemma_en_de_libreoffice", model_dir=str(tmp_path / "ours"),
                              train_steps=2, save_every=2, progress=False, **run.RECIPE_MODEL))
  common = [f"--gin_search_paths={REPO},{t5x_root}"]
  subprocess.run([sys.executable, "-m", "t5x.train", *common,
                  f"--gin_file={CONFIGS}/gemma_en_de_libreoffice_finetune.gin",
                  f"--gin.MODEL_DIR='{tmp_path}/t5x'",
                  f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path}/ours/checkpoint_2'",
                  "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=2"], check=True, cwd=REPO)
  subprocess.run([sys.executable, "-m", "t5x.eval", *common,
                  f"--gin_file={CONFIGS}/gemma_en_de_libreoffice_eval.gin",
                  f"--gin.CHECKPOINT_PATH='{tmp_path}/t5x/checkpoint_4'",
                  f"--gin.EVAL_OUTPUT_DIR='{tmp_path}/eval'",
                  "--gin.utils.DatasetConfig.batch_size=8"], check=True, cwd=REPO)
