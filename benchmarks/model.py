"""Model benchmark: training throughput / MFU and greedy decoding next to `transformers`, one run.

    .venv/bin/python -m benchmarks.model                 # defaults below (~2 minutes on 2 cores)
    .venv/bin/python -m benchmarks.model --config tiny_gemma2 --train-steps 5 --runs 1   # smoke

1. CPU matmul peak: a jitted float32 [n, n] @ [n, n] on this machine, best of `--runs`
   (FLOPs = 2 n^3). Everything below is measured against it in the same process.
2. Training step: the trainer's (`model.runner.train_step`) with plain AdamW (optax), on random tokens
   [batch, seq], loss on every position. tokens/s = batch * seq / step time (median after
   warm-up). Then the same step on PrefixLM-shaped weights (`--prefix-lm-share` of each row,
   0.4 ~ en->de answers): logits at every position, only at the weighted ones (the trainer's
   `--loss_positions_bucket`), and that plus bfloat16 activations. Model FLOPs per
   step = 3 x forward, forward = 2 * tokens * (matmul parameters, tied read-out included)
   + 4 * tokens * seq * layers * heads * head_dim (QK^T and PV over the full [seq, seq] score
   matrix that is computed). MFU = model FLOP/s / matmul peak. Then where the step's time goes:
   XLA's op timings from `jax.profiler`, grouped by model part (`benchmarks.xla_profile`), for
   this step and for the recipe model's (`demo.run.RECIPE_TRAIN`: bfloat16, 8 x 192, loss on
   the answers; its tokens/s is the recipe's training speed; `--recipe-batches 16,32` times it
   at other rows per step too). The recipe's step is also timed in two fresh processes, one with
   glibc malloc's defaults and one with the settings our CLIs apply
   (`gemma_seqio.malloc_settings`), with the minor page faults per step and the share of CPU
   time spent in the kernel. This process applies them too, as the trainer does
   (`GEMMA_SEQIO_MALLOC=default` to measure everything with glibc's defaults).
3. Greedy decoding: the same random Gemma 2 weights as a `transformers` `Gemma2ForCausalLM`
   (fp32, eager attention, its own KV cache in `generate`) and, via `save_pretrained` +
   `load_hf_checkpoint`, in ours (`model.generate`, jitted while-loop over a static KV cache).
   Both produce exactly `--new-tokens` tokens per row (no stop ids); generated tokens/s =
   batch * new tokens / wall time (best of `--runs`, runs alternating between the two, compile
   excluded and reported apart). transformers runs with 1 and with all torch threads and gets
   the faster (OpenMP spin-waiting makes 2 threads slower than 1 on a busy machine). The tokens
   of both are compared. Every decoding step reads all the model's weights once; the
   "weights-read floor" is batch / the time of one jitted pass that only reads them (a sum
   over every parameter, best of 20, less an empty call), the speed a step could reach if
   reading its weights were all it did. At batch 1 a model of tens of MB is close to it:
   decoding there is bound by memory, not by arithmetic (for the tiny presets the sum's own
   per-op cost is most of that pass, and the figure means little).
4. Beam search next to greedy on the same prompts (`--beam-config`, the recipe model by
   default; random weights, `--beam-batch` prompts of each of `--beam-prompt-lens` tokens (96 is
   the recipe's `inputs_length`), `--beam-new-tokens` each, no stop ids so every row runs the
   whole budget): `model.beam_search` with 4 beams
   (length penalty 0.8, the evaluation default) vs `model.generate` greedy, and greedy on the
   prompts repeated 4 times (the same number of rows as the beams: what the beams cost before
   any search bookkeeping; the beams keep each prompt's keys once, so they can cost less).
   Best of `--runs`, runs alternating.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def _best(fn, runs):
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def matmul_peak(n: int, runs: int) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  mm = jax.jit(lambda x, y: x @ y)
  mm(a, b).block_until_ready()
  seconds = _best(lambda: mm(a, b).block_until_ready(), max(runs, 5))
  return 2 * n ** 3 / seconds


def weights_read_seconds(params, runs: int = 20) -> float:
  """Seconds for one pass that reads every parameter once (a jitted sum), best of `runs`,
  less a call that reads nothing (what dispatching the call costs)."""
  import jax
  import jax.numpy as jnp
  read = jax.jit(lambda p: sum(jnp.sum(leaf) for leaf in jax.tree.leaves(p)))
  nothing = jax.jit(lambda p: jax.tree.leaves(p)[0].reshape(-1)[0])
  for fn in (read, nothing):
    fn(params).block_until_ready()
  return (_best(lambda: read(params).block_until_ready(), runs)
          - _best(lambda: nothing(params).block_until_ready(), runs))


def train_step_flops(cfg, batch: int, seq: int) -> float:
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_dim
  matmul_params = cfg.num_layers * (d * h * (2 * n + 2 * k) + 3 * d * f) + cfg.vocab_size * d
  tokens = batch * seq
  forward = 2 * tokens * matmul_params + 4 * tokens * seq * cfg.num_layers * n * h
  return 3 * forward


def _train_inputs(cfg, batch: int, seq: int, answer_share: float):
  """Random tokens [batch, seq] as the trainer's features; loss weight on the last
  `answer_share` of every row."""
  import jax.numpy as jnp
  rs = np.random.RandomState(0)
  targets = rs.randint(4, cfg.vocab_size, size=(batch, seq)).astype(np.int32)
  weights = np.zeros((batch, seq), np.int32)
  weights[:, seq - int(round(answer_share * seq)):] = 1
  return {
      "decoder_target_tokens": jnp.asarray(targets),
      "decoder_input_tokens": jnp.asarray(
          np.concatenate([np.full((batch, 1), 2, np.int32), targets[:, :-1]], 1)),
      "decoder_loss_weights": jnp.asarray(weights),
  }


def profile_train_step(cfg, batch: int, seq: int, answer_share: float, bucket: int, runs: int):
  """`benchmarks.xla_profile` of the trainer's step (not donating, so it can run again)."""
  import jax
  import optax
  from benchmarks.xla_profile import profile
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  from model.runner.train import loss_positions_bucket as bucket_of
  from model.runner.train_step import make_train_step
  m = GemmaDecoderOnlyModel(cfg)
  params = m.get_initial_variables(jax.random.PRNGKey(0),
                                   {"decoder_input_tokens": (batch, seq)})["params"]
  opt = optax.adamw(1e-3)
  features = _train_inputs(cfg, batch, seq, answer_share)
  positions = bucket_of({"decoder_loss_weights": np.asarray(features["decoder_loss_weights"])},
                        bucket)
  step = make_train_step(m, opt, donate=False)
  return profile(step, (params, opt.init(params), features, 0, positions), runs=runs)


def recipe_step_shape():
  """(config, rows, row length) of the recipe's step as `python -m demo.run --recipe` trains it
  (demo.run.RECIPE_TRAIN)."""
  from demo.run import RECIPE_PRESET, RECIPE_TRAIN
  from model.config import get_config
  return (get_config(RECIPE_PRESET).replace(dtype=RECIPE_TRAIN["dtype"]),
          RECIPE_TRAIN["batch_size"], RECIPE_TRAIN["inputs_length"] + RECIPE_TRAIN["targets_length"])


def recipe_step_child(steps: int) -> dict:
  """The recipe's train step in this (fresh) process: step time, page faults, kernel share."""
  import resource
  cfg, rows, seq = recipe_step_shape()
  bench_train(cfg, rows, seq, 3, 0.5, 256)   # compile and warm up
  before = resource.getrusage(resource.RUSAGE_SELF)
  step_s, _, losses = bench_train(cfg, rows, seq, steps, 0.5, 256)
  after = resource.getrusage(resource.RUSAGE_SELF)
  user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
  return {"step_s": step_s, "tokens_per_s": rows * seq / step_s,
          "faults_per_step": (after.ru_minflt - before.ru_minflt) / (steps + 1),
          "kernel_share": system / (user + system), "last_loss": losses[-1]}


def bench_malloc_settings(steps: int, runs: int) -> dict:
  """{setting: best child result}: fresh processes with glibc's defaults and with ours,
  alternating (the settings must be in place before JAX starts its threads)."""
  import json
  import subprocess
  best = {}
  for _ in range(runs):
    for name, env in (("glibc defaults", "default"), ("ours (malloc_settings)", "")):
      out = subprocess.run(
          [sys.executable, "-m", "benchmarks.model", "--recipe-step-child", str(steps)],
          env={**os.environ, "GEMMA_SEQIO_MALLOC": env}, capture_output=True, text=True,
          check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
      result = json.loads(out.stdout.strip().splitlines()[-1])
      if name not in best or result["step_s"] < best[name]["step_s"]:
        best[name] = result
  return best


def _print_profile(rows):
  for row in rows:
    print(f"    {row.seconds * 1e3:8.1f} ms  {row.share:6.1%}  {row.part}")


def bench_train(cfg, batch: int, seq: int, steps: int, answer_share: float = 1.0,
                loss_positions_bucket: int = 0):
  """(median step seconds, compile seconds, losses). Loss weight on the last `answer_share` of
  every row (1.0: LM, every position; ~0.4: PrefixLM en->de rows); with a bucket, logits only at
  the weighted positions (`model.runner.train.loss_positions_bucket`, as the trainer does)."""
  import jax
  import optax
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  from model.runner.train import loss_positions_bucket as bucket_of
  from model.runner.train_step import make_train_step

  m = GemmaDecoderOnlyModel(cfg)
  shapes = {"decoder_input_tokens": (batch, seq)}
  params = m.get_initial_variables(jax.random.PRNGKey(0), shapes)["params"]
  opt = optax.adamw(1e-3)
  opt_state = opt.init(params)
  batch_features = _train_inputs(cfg, batch, seq, answer_share)
  positions = bucket_of({"decoder_loss_weights": np.asarray(batch_features["decoder_loss_weights"])},
                        loss_positions_bucket)
  step = make_train_step(m, opt)   # the trainer's step

  t = time.perf_counter()
  params, opt_state, metrics = step(params, opt_state, batch_features, 0, positions)
  metrics["loss"].block_until_ready()
  compile_s = time.perf_counter() - t
  times, losses = [], []
  for _ in range(steps):
    t = time.perf_counter()
    params, opt_state, metrics = step(params, opt_state, batch_features, 0, positions)
    loss = metrics["loss"].block_until_ready()
    times.append(time.perf_counter() - t)
    losses.append(float(loss))
  return statistics.median(times), compile_s, losses


def bench_decode(cfg, batch: int, prompt_len: int, new_tokens: int, runs: int, torch_threads):
  import jax
  import torch
  import transformers
  from model.checkpoints import load_hf_checkpoint
  from model.decoding import Greedy, generate

  hf_cfg = transformers.Gemma2Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.hidden_dim,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
      query_pre_attn_scalar=int(cfg.query_pre_attn_scalar), sliding_window=cfg.sliding_window_size,
      attn_logit_softcapping=cfg.attn_logit_softcap,
      final_logit_softcapping=cfg.final_logit_softcap,
      max_position_embeddings=max(8192, prompt_len + new_tokens), attn_implementation="eager")
  torch.manual_seed(0)
  hf = transformers.Gemma2ForCausalLM(hf_cfg).eval()
  with torch.no_grad():   # HF initialises norms to 0 and weights tiny: make outputs non-trivial
    for name, p in hf.named_parameters():
      p.normal_(0, 0.3 if "norm" in name else 0.05)
  with tempfile.TemporaryDirectory() as tmp:
    hf.save_pretrained(tmp)
    ours_cfg, params = load_hf_checkpoint(tmp)
  params = jax.device_put(params)
  prompts = np.random.RandomState(1).randint(4, cfg.vocab_size, size=(batch, prompt_len))
  prompts[:, 0] = 2
  torch_prompts = torch.from_numpy(prompts.astype(np.int64))

  def run_hf():
    with torch.no_grad():
      return hf.generate(torch_prompts, attention_mask=torch.ones_like(torch_prompts),
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         eos_token_id=None, pad_token_id=0)

  def run_ours():
    out = generate(ours_cfg, params, prompts.tolist(), max_new_tokens=new_tokens, strategy=Greedy(),
                   stop_ids=())
    out.tokens.block_until_ready()
    return out

  t = time.perf_counter()
  ours_tokens = np.asarray(run_ours().tokens)
  compile_s = time.perf_counter() - t
  hf_tokens = run_hf()[:, prompt_len:].numpy()
  agree = float(np.mean(ours_tokens == hf_tokens))
  # torch's OpenMP threads spin-wait; on a busy machine 2 threads can be far slower than 1, so
  # the anchor gets its best thread count. Runs alternate so both sides see the same load.
  ours_times, hf_times = [], {n: [] for n in torch_threads}
  default_threads = torch.get_num_threads()
  for _ in range(runs):
    ours_times.append(_best(run_ours, 1))
    for n in torch_threads:
      torch.set_num_threads(n)
      hf_times[n].append(_best(run_hf, 1))
  torch.set_num_threads(default_threads)
  best_threads = min(hf_times, key=lambda n: min(hf_times[n]))
  return (min(ours_times), min(hf_times[best_threads]), best_threads, compile_s, agree,
          weights_read_seconds(params))


def bench_beams(cfg, batch: int, prompt_len: int, new_tokens: int, runs: int, num_beams: int = 4):
  """Seconds for (greedy, greedy on the prompts repeated num_beams times, beam search)."""
  import jax
  from model.beams import BeamSearch, beam_search
  from model.decoding import generate
  from model.transformer import init_params

  params = init_params(cfg, jax.random.PRNGKey(0))
  prompts = np.random.RandomState(2).randint(4, cfg.vocab_size, size=(batch, prompt_len))
  prompts[:, 0] = 2
  repeated = np.repeat(prompts, num_beams, axis=0)
  strategy = BeamSearch(num_beams=num_beams, length_penalty=0.8)
  calls = {
      "greedy": lambda: generate(cfg, params, prompts.tolist(), max_new_tokens=new_tokens,
                                 stop_ids=()).tokens.block_until_ready(),
      "greedy, rows x beams": lambda: generate(cfg, params, repeated.tolist(),
                                               max_new_tokens=new_tokens,
                                               stop_ids=()).tokens.block_until_ready(),
      "beams": lambda: beam_search(cfg, params, prompts.tolist(), beam=strategy,
                                   max_new_tokens=new_tokens,
                                   stop_ids=()).tokens.block_until_ready(),
  }
  for call in calls.values():
    call()   # compile
  times = {name: [] for name in calls}
  for _ in range(runs):
    for name, call in calls.items():
      times[name].append(_best(call, 1))
  return {name: min(t) for name, t in times.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="small_gemma2", help="a model.config preset (Gemma 2 shaped)")
  p.add_argument("--train-batch", type=int, default=8)
  p.add_argument("--train-seq", type=int, default=256)
  p.add_argument("--train-steps", type=int, default=10)
  p.add_argument("--prefix-lm-share", type=float, default=0.4,
                 help="answer share of the PrefixLM step comparison (0: skip it)")
  p.add_argument("--decode-batches", default="1,8", help="comma-separated batch sizes")
  p.add_argument("--prompt-len", type=int, default=16)
  p.add_argument("--new-tokens", type=int, default=128)
  p.add_argument("--no-recipe-step", dest="recipe_step", action="store_false",
                 help="skip the recipe model's train step and its profile")
  p.add_argument("--recipe-batches", default="",
                 help="comma-separated rows per step to time the recipe's step at besides its own "
                      "(e.g. 16,32: how its tokens/s changes with the rows per step)")
  p.add_argument("--beam-config", default="recipe_gemma2",
                 help="model.config preset of the beam search comparison ('' to skip it)")
  p.add_argument("--beam-batch", type=int, default=64)
  p.add_argument("--beam-prompt-lens", default="32,96", help="comma-separated prompt lengths")
  p.add_argument("--beam-new-tokens", type=int, default=64)
  p.add_argument("--matmul-n", type=int, default=1024)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--recipe-step-child", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)

  from gemma_seqio import malloc_settings
  malloc_settings.keep_freed_memory()   # as the trainer does, before JAX starts
  if args.recipe_step_child:
    import json
    print(json.dumps(recipe_step_child(args.recipe_step_child)))
    return 0

  import jax
  import torch
  import transformers
  from model.config import get_config
  transformers.utils.logging.disable_progress_bar()
  cfg = get_config(args.config)
  print(f"# jax {jax.__version__} ({jax.default_backend()}, {os.cpu_count()} CPUs), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); config {args.config}: "
        f"{cfg.num_params / 1e6:.1f}M params, D={cfg.embed_dim}, layers={cfg.num_layers}, "
        f"heads={cfg.num_heads}/{cfg.num_kv_heads} kv, V={cfg.vocab_size}")

  peak = matmul_peak(args.matmul_n, args.runs)
  print(f"CPU matmul peak (fp32 {args.matmul_n}^3, jax): {peak / 1e9:.1f} GFLOP/s")

  step_s, compile_s, losses = bench_train(cfg, args.train_batch, args.train_seq, args.train_steps)
  tokens = args.train_batch * args.train_seq
  flops = train_step_flops(cfg, args.train_batch, args.train_seq)
  print(f"train step [{args.train_batch} x {args.train_seq}]: {step_s * 1e3:.0f} ms/step "
        f"(median of "
        f"{args.train_steps}), {tokens / step_s:,.0f} tokens/s, {flops / step_s / 1e9:.1f} model "
        f"GFLOP/s, MFU {flops / step_s / peak:.1%} of the matmul peak (compile {compile_s:.1f} s; "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f})")

  print("  where its time goes (XLA op time by model part, per step):")
  _print_profile(profile_train_step(cfg, args.train_batch, args.train_seq, 1.0, 0, args.runs))

  if args.recipe_step:
    from demo.run import RECIPE_PRESET, RECIPE_TRAIN
    rcfg, rbatch, rseq = recipe_step_shape()
    print(f"recipe train step ({RECIPE_PRESET}, {RECIPE_TRAIN['dtype']}, rows of {rseq}, loss on "
          "the second half of each row, logits at those positions; MFU counts logits at every "
          "position):")
    for rows in sorted({rbatch, *(int(b) for b in args.recipe_batches.split(",") if b)}):
      s, _, _ = bench_train(rcfg, rows, rseq, args.train_steps, 0.5, 256)
      rflops = train_step_flops(rcfg, rows, rseq)
      print(f"  {rows:>3} rows{' (the recipe)' if rows == rbatch else '':<13} "
            f"{s * 1e3:6.0f} ms/step  {rows * rseq / s:8,.0f} tokens/s  "
            f"MFU {rflops / s / peak:.1%}")
    print("  where its time goes:")
    _print_profile(profile_train_step(rcfg, rbatch, rseq, 0.5, 256, args.runs))
    steps = max(args.train_steps, 50)
    print(f"  in fresh processes, glibc malloc's defaults vs ours ({steps} steps, best of "
          f"{args.runs}):")
    results = bench_malloc_settings(steps, args.runs)
    base = results["glibc defaults"]["step_s"]
    for name, r in results.items():
      print(f"    {name:<24} {r['step_s'] * 1e3:6.0f} ms/step  {r['tokens_per_s']:8,.0f} tokens/s  "
            f"{base / r['step_s']:.2f}x  page faults/step {r['faults_per_step']:8,.0f}  "
            f"kernel {r['kernel_share']:.0%} of CPU time  loss {r['last_loss']:.4f}")

  if args.prefix_lm_share:
    # The trainer's two switches on a PrefixLM-shaped batch (loss on the answers only).
    print(f"PrefixLM train step [{args.train_batch} x {args.train_seq}], loss weight on the last "
          f"{args.prefix_lm_share:.0%} of each row:")
    base = None
    for name, dtype, bucket in (("logits at every position, float32", "float32", 0),
                                ("logits at weighted positions (bucket 256)", "float32", 256),
                                ("  + --dtype bfloat16", "bfloat16", 256)):
      s, _, _ = bench_train(cfg.replace(dtype=dtype), args.train_batch, args.train_seq,
                            args.train_steps, args.prefix_lm_share, bucket)
      base = base or s
      print(f"  {name:<44} {s * 1e3:6.0f} ms/step  {tokens / s:8,.0f} tokens/s  "
            f"{base / s:.2f}x")

  print(f"greedy decoding, prompt {args.prompt_len}, {args.new_tokens} new tokens per row:")
  print(f"  {'batch':>5}  {'ours tok/s':>11}  {'transformers tok/s':>18}  {'(threads)':>9}  "
        f"{'ratio':>6}  {'same tokens':>11}  {'our compile':>11}  {'weights-read floor':>18}")
  threads = sorted({1, torch.get_num_threads()})
  for batch in (int(b) for b in args.decode_batches.split(",")):
    ours_s, hf_s, hf_threads, compile_s, agree, read_s = bench_decode(
        cfg, batch, args.prompt_len, args.new_tokens, args.runs, threads)
    generated = batch * args.new_tokens
    floor = batch / read_s
    print(f"  {batch:>5}  {generated / ours_s:>11,.0f}  {generated / hf_s:>18,.0f}  "
          f"{hf_threads:>9}  "
          f"{hf_s / ours_s:>5.1f}x  {agree:>11.1%}  {compile_s:>9.1f} s  "
          f"{floor:>9,.0f} tok/s (ours {generated / ours_s / floor:.0%} of it)")

  if args.beam_config:
    for prompt_len in (int(n) for n in args.beam_prompt_lens.split(",")):
      times = bench_beams(get_config(args.beam_config), args.beam_batch, prompt_len,
                          args.beam_new_tokens, args.runs)
      print(f"beam search vs greedy ({args.beam_config}, {args.beam_batch} prompts of "
            f"{prompt_len}, {args.beam_new_tokens} new tokens, no stops):")
      for name, seconds in times.items():
        print(f"  {name:<22} {seconds * 1e3:8.0f} ms  {seconds / times['greedy']:5.2f}x greedy")
  return 0


if __name__ == "__main__":
  sys.exit(main())
