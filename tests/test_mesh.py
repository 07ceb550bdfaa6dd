"""`model.runner.mesh`: training and decoding on a device mesh, one process or several.

The multi-device runs need JAX started with 8 (or 2) CPU devices, so they run in a subprocess
(tests/mesh_runs.py) or as `python -m model.runner.train` processes joined by `jax.distributed`.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from model.runner import mesh as mesh_lib
from model.config import tiny_gemma2
from model.runner.t5x_model import GemmaDecoderOnlyModel

# Slow (`make test-slow`, run by CI): 8 simulated devices and two-process jax.distributed runs
# in fresh interpreters.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mesh_flag():
  assert mesh_lib.MeshConfig.parse("data=4,model=2") == mesh_lib.MeshConfig(data=4, model=2)
  assert mesh_lib.MeshConfig.parse("model=2", fsdp=True) == mesh_lib.MeshConfig(
      data=None, model=2, fsdp=True)
  assert mesh_lib.MeshConfig.parse("") == mesh_lib.MeshConfig()
  for bad in ("data=0", "rows=2", "data=x", "data"):
    with pytest.raises(ValueError, match="--mesh expects data=N,model=M"):
      mesh_lib.MeshConfig.parse(bad)
  with pytest.raises(ValueError, match="needs 2 devices; this job has 1"):
    mesh_lib.MeshPlan.create(mesh_lib.MeshConfig(data=2))
  with pytest.raises(ValueError, match="all of --coordinator_address"):
    mesh_lib.initialize_distributed("localhost:1234", None, 0)


def test_shardings_follow_the_logical_axis_rules():
  plan = mesh_lib.MeshPlan.create()
  model = GemmaDecoderOnlyModel(tiny_gemma2())
  specs = jax.tree.map(lambda s: tuple(s.spec), plan.param_shardings_for(model))
  assert specs["embedder"]["input_embedding"] == ("model", None)
  assert specs["layer_0"]["attn"]["q"] == (None, "model", None)
  assert specs["layer_0"]["attn"]["k"] == (None, None, None)      # kv heads stay whole
  assert specs["layer_1"]["mlp"]["down"] == ("model", None)
  fsdp = mesh_lib.MeshPlan.create(mesh_lib.MeshConfig(fsdp=True))
  specs = jax.tree.map(lambda s: tuple(s.spec), fsdp.param_shardings_for(model))
  assert specs["layer_1"]["mlp"]["down"] == ("model", "data")
  assert specs["final_norm"]["scale"] == ("data",)


def test_init_and_batches_on_one_device_equal_the_plain_path():
  import optax
  plan = mesh_lib.MeshPlan.create()
  model = GemmaDecoderOnlyModel(tiny_gemma2())
  tx = optax.adam(1e-3)
  rng = jax.random.PRNGKey(3)
  params, state, _, state_sh = plan.init(model, tx, rng, 16)
  plain = model.get_initial_variables(rng, {"decoder_input_tokens": (1, 16)})["params"]
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(state) == jax.tree.structure(tx.init(plain))
  assert jax.tree.structure(state_sh) == jax.tree.structure(state)
  batch = plan.global_batch({"decoder_input_tokens": np.arange(6).reshape(2, 3)})
  np.testing.assert_array_equal(plan.to_host(batch["decoder_input_tokens"]),
                                np.arange(6).reshape(2, 3))
  assert sum(mesh_lib.bytes_per_device(params).values()) == sum(
      x.nbytes for x in jax.tree.leaves(plain))


def _env(devices):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return env


def _run(cmd, log, env):
  with open(log, "w", encoding="utf-8") as f:
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                          check=False)
  if proc.returncode:
    with open(log, encoding="utf-8") as f:
      tail = "".join(f.readlines()[-30:])
    raise AssertionError(f"{cmd[:4]} failed (rc {proc.returncode}):\n{tail}")


@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
  out = tmp_path_factory.mktemp("meshes")
  _run([sys.executable, os.path.join(REPO, "tests", "mesh_runs.py"), str(out)],
       str(out / "runs.log"), _env(8))
  with open(out / "results.json", encoding="utf-8") as f:
    return json.load(f)


def test_first_20_losses_agree_on_every_mesh(mesh_results):
  """One device, (8, 1), (4, 2), (2, 4) and FSDP over 8: the same 20 losses to 1e-5."""
  losses = mesh_results["losses"]
  reference = losses["one_device"]
  assert len(reference) == 20 and reference[-1] < reference[0]
  for name, values in losses.items():
    np.testing.assert_allclose(values, reference, rtol=1e-5, err_msg=name)


def test_a_checkpoint_of_one_mesh_resumes_on_another(mesh_results):
  resumed = mesh_results["resumed"]
  assert len(resumed["4x2"]) == 2
  for name in ("4x2_on_8x1", "4x2_on_one_device"):
    np.testing.assert_allclose(resumed[name], resumed["4x2"], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("decoding", ["greedy", "beam"])
def test_decoding_on_a_mesh_equals_one_device(mesh_results, decoding):
  runs = mesh_results["predictions"]
  one = runs[f"{decoding}_one_device"]
  assert len(one["texts"]) == 16 and any(one["texts"])
  for name in ("8x1", "4x2"):
    assert runs[f"{decoding}_{name}"]["texts"] == one["texts"], name
    assert runs[f"{decoding}_{name}"]["bleu"] == one["bleu"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
  """`jax.distributed` on localhost: each process reads its own input shard and feeds its rows;
  20 steps give the parameters of one process with 2 devices reading both shards."""
  from model.runner import t5x_checkpoints
  common = [sys.executable, "-m", "model.runner.train", "--task", "gemma_en_de_libreoffice",
            "--preset", "tiny_gemma2", "--inputs_length", "32", "--targets_length", "32",
            "--batch_size", "8", "--train_steps", "20", "--save_every", "20", "--log_every", "1",
            "--shuffle_buffer_size", "0", "--learning_rate", "3e-3", "--warmup_steps", "5",
            "--no_progress"]
  port = _free_port()
  procs = []
  for pid in range(2):
    log = open(tmp_path / f"p{pid}.log", "w", encoding="utf-8")  # noqa: SIM115
    procs.append((subprocess.Popen(
        common + ["--model_dir", str(tmp_path / "two"), "--coordinator_address",
                  f"localhost:{port}", "--num_processes", "2", "--process_id", str(pid)],
        cwd=REPO, env=_env(1), stdout=log, stderr=subprocess.STDOUT), log))
  for proc, log in procs:
    assert proc.wait(timeout=900) == 0, (tmp_path / f"p{proc.args[-1]}.log").read_text()[-3000:]
    log.close()
  _run(common + ["--model_dir", str(tmp_path / "one"), "--input_shards", "2"],
       str(tmp_path / "one.log"), _env(2))
  two = t5x_checkpoints.restore_state_dict(str(tmp_path / "two" / "checkpoint_20"))
  one = t5x_checkpoints.restore_state_dict(str(tmp_path / "one" / "checkpoint_20"))
  flat_two, flat_one = jax.tree.leaves(two), jax.tree.leaves(one)
  assert len(flat_two) == len(flat_one)
  # Equal up to float32 summation order (the cross-process all-reduce adds in another order;
  # Adam's division by sqrt(v) magnifies that on a few near-zero gradients): 20 steps of
  # lr 3e-3 move a parameter by ~5e-2, the two runs differ by at most ~1e-6 here.
  for a, b in zip(flat_two, flat_one):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  with open(tmp_path / "two" / "train_metrics.jsonl", encoding="utf-8") as f:
    losses_two = [json.loads(line)["loss"] for line in f]
  with open(tmp_path / "one" / "train_metrics.jsonl", encoding="utf-8") as f:
    losses_one = [json.loads(line)["loss"] for line in f]
  assert len(losses_two) == 20
  np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)


def test_input_shards_are_recorded_and_a_resume_must_keep_them(tmp_path):
  """The batches depend on --input_shards (not on the process count): a resume with another
  value would not continue the same run, so it is refused."""
  from model.runner import train
  common = dict(task="gemma_en_de_libreoffice", model_dir=str(tmp_path), preset="tiny_gemma2",
                inputs_length=16, targets_length=16, batch_size=4, train_steps=3,
                max_steps_per_run=1, shuffle_buffer_size=0, progress=False)
  train.train(train.TrainArgs(**common))
  with open(tmp_path / train.TRAIN_ARGS_FILE, encoding="utf-8") as f:
    assert json.load(f)["input_shards"] == 1
  with pytest.raises(ValueError, match="input_shards: checkpoint 1 vs now 2"):
    train.train(train.TrainArgs(input_shards=2, **common))
  with pytest.raises(ValueError, match="--batch_size 4 must be a multiple of --input_shards"):
    train.train(train.TrainArgs(**dict(common, model_dir=str(tmp_path / "b"), input_shards=3)))
