"""Training on a device mesh, on 8 simulated CPU devices: memory per device, losses, step time.

    python benchmarks/mesh.py [--preset small_gemma2] [--steps 20]

Prints, for each mesh (one device, (8, 1), (4, 2), (2, 4), FSDP over 8):
  * bytes of parameters + optimizer state held by the fullest device, and its share of the
    unsharded total (read from the arrays' shardings);
  * the first `--steps` losses' largest relative difference from the one-device run;
  * the median step time. Simulated devices share the machine's 2 cores, so this measures
    the cost of partitioning, not a speed-up.
"""
import argparse
import os
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MESHES = [("one device", "data=1", False), ("(8, 1)", "data=8", False),
          ("(4, 2)", "data=4,model=2", False), ("(2, 4)", "data=2,model=4", False),
          ("FSDP over 8", "data=8", True)]


def run(preset: str, steps: int, batch_size: int, length: int):
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from model import config as config_lib  # noqa: PLC0415
  from model.runner import mesh as mesh_lib, optim  # noqa: PLC0415
  from model.runner.t5x_model import GemmaDecoderOnlyModel  # noqa: PLC0415
  from model.runner.train_step import make_train_step  # noqa: PLC0415

  cfg = config_lib.get_config(preset)
  model = GemmaDecoderOnlyModel(cfg)
  tx = optim.adamw_with_clipping(1e-3, total_steps=steps, warmup_steps=2)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, size=(steps, batch_size, length)).astype(np.int32)
  weights = np.zeros((batch_size, length), np.float32)
  weights[:, length // 3:] = 1.0
  rows = []
  for name, mesh, fsdp in MESHES:
    plan = mesh_lib.MeshPlan.create(mesh_lib.MeshConfig.parse(mesh, fsdp=fsdp))
    params, state, param_sh, state_sh = plan.init(model, tx, jax.random.PRNGKey(0), length)
    per_device = mesh_lib.bytes_per_device(params, state)
    total = sum(x.nbytes for x in jax.tree.leaves((params, state))
                if hasattr(x, "nbytes"))

    step = make_train_step(model, tx, out_shardings=(param_sh, state_sh, plan.replicated))
    losses, times = [], []
    for i in range(steps):
      batch = plan.global_batch({
          "decoder_input_tokens": np.pad(tokens[i], ((0, 0), (1, 0)), constant_values=2)[:, :-1],
          "decoder_target_tokens": tokens[i], "decoder_loss_weights": weights})
      t0 = time.perf_counter()
      params, state, metrics = step(params, state, batch, i, None)
      losses.append(float(metrics["loss"]))
      times.append(time.perf_counter() - t0)
    rows.append((name, max(per_device.values()), total, losses, float(np.median(times[2:]))))
  reference = np.asarray(rows[0][3])
  print(f"{preset}: {cfg.num_params / 1e6:.2f}M parameters, batch {batch_size} x {length}, "
        f"{steps} steps, {jax.device_count()} simulated CPU devices\n")
  print("| mesh | bytes on the fullest device | share of the total | max rel. loss diff "
        "| median step |")
  print("|---|---:|---:|---:|---:|")
  for name, fullest, total, losses, seconds in rows:
    diff = float(np.max(np.abs(np.asarray(losses) - reference) / np.abs(reference)))
    print(f"| {name} | {fullest / 2**20:.2f} MiB | {fullest / total:.3f} | {diff:.1e} | "
          f"{seconds * 1000:.0f} ms |")


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="small_gemma2")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--length", type=int, default=128)
  a = p.parse_args()
  run(a.preset, a.steps, a.batch_size, a.length)


if __name__ == "__main__":
  main()
