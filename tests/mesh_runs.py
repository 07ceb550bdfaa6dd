"""Runs of `model.runner.train` / `model.runner.evaluate` on several meshes, in one process with 8 CPU devices.

Started by tests/test_mesh.py as `python tests/mesh_runs.py OUT_DIR` with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (JAX reads it when it starts, so it cannot
be set from inside a test). Writes OUT_DIR/results.json:

    {"losses": {mesh: [20 losses]}, "resumed": {...}, "predictions": {mesh: [...]},
     "bytes": {mesh: [per-device bytes]}, "total_bytes": N}
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MESHES = {"one_device": "data=1", "8x1": "data=8", "4x2": "data=4,model=2",
          "2x4": "data=2,model=4", "fsdp8": "data=8"}
STEPS = 20


def main(out):
  import jax  # noqa: PLC0415
  from model.runner import evaluate, train  # noqa: PLC0415
  assert jax.device_count() == 8, jax.devices()
  common = dict(task="gemma_en_de_libreoffice", preset="tiny_gemma2", inputs_length=32,
                targets_length=32, batch_size=8, train_steps=STEPS + 2, log_every=1,
                save_every=STEPS, shuffle_buffer_size=0, progress=False, learning_rate=3e-3,
                warmup_steps=5)
  results = {"losses": {}, "predictions": {}}
  for name, mesh in MESHES.items():
    model_dir = os.path.join(out, name)
    train.train(train.TrainArgs(model_dir=model_dir, mesh=mesh, fsdp=name.startswith("fsdp"),
                                max_steps_per_run=STEPS, **common))
    with open(os.path.join(model_dir, train.METRICS_FILE), encoding="utf-8") as f:
      results["losses"][name] = [json.loads(line)["loss"] for line in f]

  # A checkpoint written on the (4, 2) mesh resumes on (8, 1) and on one device: the next two
  # steps equal those of the (4, 2) run itself.
  results["resumed"] = {}
  for name in ("4x2_on_8x1", "4x2_on_one_device"):
    shutil.copytree(os.path.join(out, "4x2"), os.path.join(out, name))
  for name, mesh in (("4x2", "data=4,model=2"), ("4x2_on_8x1", "data=8"),
                     ("4x2_on_one_device", "data=1")):
    model_dir = os.path.join(out, name)
    train.train(train.TrainArgs(model_dir=model_dir, mesh=mesh, **common))
    with open(os.path.join(model_dir, train.METRICS_FILE), encoding="utf-8") as f:
      results["resumed"][name] = [json.loads(line)["loss"] for line in f][STEPS:]

  # Decoding of the same checkpoint, greedy and with beams, on one device and on meshes.
  for decoding, beams in (("greedy", 1), ("beam", 2)):
    for name, mesh in (("one_device", ""), ("8x1", "data=8"), ("4x2", "data=4,model=2")):
      args = evaluate.EvalArgs(checkpoint_dir=os.path.join(out, "4x2"), task=common["task"],
                               output_dir=os.path.join(out, f"eval_{decoding}_{name}"),
                               num_examples=16, batch_size=8, inputs_length=32,
                               targets_length=32, progress=False, mesh=mesh, beam_size=beams,
                               length_penalty=4.0)
      summary = evaluate.evaluate(args)
      with open(os.path.join(args.output_dir, f"{common['task']}-{STEPS + 2:06d}.jsonl"),
                encoding="utf-8") as f:
        predictions = [json.loads(line)["prediction"] for line in f]
      results["predictions"][f"{decoding}_{name}"] = {
          "bleu": summary["tasks"][common["task"]]["metrics"]["bleu"], "texts": predictions}
  with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main(sys.argv[1])
