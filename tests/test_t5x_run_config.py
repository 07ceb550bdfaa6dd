"""`model.runner.t5x_run_config`: the GemmaConfig of a t5x.train directory, from its config.gin."""
import pytest

from model.runner import t5x_run_config
from model.config import GemmaConfig

# What t5x.train writes (excerpt of a real operative config): imports, macros, bindings.
OPERATIVE = """from __gin__ import dynamic_registration
import __main__ as train_script
from model import config as gemma_config
from model.runner import t5x_model

# Macros:
# ==============================================================================
DROPOUT_RATE = 0.0
MODEL = @t5x_model.GemmaDecoderOnlyModel()

# Parameters for gemma_config.GemmaConfig:
# ==============================================================================
gemma_config.GemmaConfig.attention_types = \\
    ('local', 'global', 'local', 'global')
gemma_config.GemmaConfig.attn_logit_softcap = 50.0
gemma_config.GemmaConfig.dropout_rate = %DROPOUT_RATE
gemma_config.GemmaConfig.dtype = 'float32'
gemma_config.GemmaConfig.embed_dim = 128
gemma_config.GemmaConfig.final_logit_softcap = 30.0
gemma_config.GemmaConfig.head_dim = 32
gemma_config.GemmaConfig.hidden_dim = 512
gemma_config.GemmaConfig.num_heads = 4
gemma_config.GemmaConfig.num_kv_heads = 2
gemma_config.GemmaConfig.num_layers = 4
gemma_config.GemmaConfig.query_pre_attn_scalar = 32.0
gemma_config.GemmaConfig.sliding_window_size = 256
gemma_config.GemmaConfig.use_post_attn_norm = True
gemma_config.GemmaConfig.use_post_ffw_norm = True
gemma_config.GemmaConfig.version = 2
gemma_config.GemmaConfig.vocab_size = 4096

# Parameters for t5x_model.GemmaDecoderOnlyModel:
# ==============================================================================
t5x_model.GemmaDecoderOnlyModel.config = @gemma_config.GemmaConfig()
"""


def test_reads_the_shape_and_resolves_macros(tmp_path):
  (tmp_path / "config.gin").write_text(OPERATIVE)
  path = t5x_run_config.find_gin_config(str(tmp_path))
  cfg = t5x_run_config.gemma_config_from_gin(path)
  assert cfg == GemmaConfig(
      version=2, vocab_size=4096, embed_dim=128, hidden_dim=512, num_layers=4, num_heads=4,
      num_kv_heads=2, head_dim=32, query_pre_attn_scalar=32.0, attn_logit_softcap=50.0,
      final_logit_softcap=30.0, attention_types=("local", "global", "local", "global"),
      sliding_window_size=256, use_post_attn_norm=True, use_post_ffw_norm=True,
      dtype="float32", dropout_rate=0.0)
  assert t5x_run_config.find_gin_config(str(tmp_path / "nowhere")) is None


def test_refuses_a_config_without_a_gemma(tmp_path):
  (tmp_path / "config.gin").write_text("MODEL_DIR = '/tmp/x'\n")
  with pytest.raises(ValueError, match="binds no GemmaConfig"):
    t5x_run_config.gemma_config_from_gin(str(tmp_path / "config.gin"))
  (tmp_path / "config.gin").write_text(OPERATIVE.replace("DROPOUT_RATE = 0.0\n", ""))
  with pytest.raises(ValueError, match="dropout_rate = 'DROPOUT_RATE' cannot be read"):
    t5x_run_config.gemma_config_from_gin(str(tmp_path / "config.gin"))


def test_reads_a_preset_and_its_bindings(tmp_path):
  """gemma_small.gin binds the model to `recipe_gemma2()`: T5X records the preset, not fields."""
  (tmp_path / "config.gin").write_text("""from __gin__ import dynamic_registration
from model import config as gemma_config
from model.runner import t5x_model

DROPOUT_RATE = 0.1
MODEL = @t5x_model.GemmaDecoderOnlyModel()

gemma_config.recipe_gemma2.dropout_rate = %DROPOUT_RATE
gemma_config.recipe_gemma2.dtype = 'float32'

t5x_model.GemmaDecoderOnlyModel.config = @gemma_config.recipe_gemma2()
""")
  from model import config
  cfg = t5x_run_config.gemma_config_from_gin(str(tmp_path / "config.gin"))
  assert cfg == config.recipe_gemma2(dropout_rate=0.1)
