"""Input pipeline benchmark: seqio's converters next to ours, same data, same run.

    .venv/bin/python -m benchmarks.pipeline                      # full run (see --help)
    .venv/bin/python -m benchmarks.pipeline --examples 2000 --runs 1 --lengths 128:128   # smoke

Data: the first `--examples` en->de pairs of the embedded LibreOffice corpus (real text, Gemma
turns, the 4k-piece vocabulary), plus a synthetic long-sequence case (random token ids, lengths
up to twice the budget, so many are trimmed). Every row goes through `seqio.get_dataset` (Task ->
preprocessors -> tokenize -> trim -> converter) and is consumed in batches of 256.

Tasks (registered here, removed at exit):
  bench_en_de             in-memory pairs -> the registered task's preprocessors (translation
                          prompt and gemma_tasks.tokenization.tokenize, once per batch)
  bench_synthetic_long    in-memory token ids (no tokenization)
A stage profile (source, +format, +tokenize, +trim, +converter) shows where the time goes.

Rows: tokenize only (no converter), then seqio's and our converter, packed and unpacked, for
PrefixLM, LM (targets only) and EncDec. Columns: examples/s (task examples in / wall time),
non-padding tokens/s, fill ratio (non-padding / all positions), and whether our output is
identical to seqio's (checked on the warm-up pass). Times are the median of `--runs` runs after
one warm-up; seqio and ours alternate within each repetition so both see the same machine load.

Then the registered tasks with their own JSONL sources (`gemma_en_de_libreoffice` at every
budget, the others and the mixtures at the first), packed PrefixLM: ours next to the anchor
(the same steps one example at a time, `benchmarks/per_example_steps.py`, with seqio's
`tokenize` and seqio's converter), and the limit row: raw SentencePiece (all CPUs) on the
task's own formatted strings. `--only-registered` runs just these. Figures: README, "Feature
converters".

`--spread N` measures something else: N new pipelines one after the other (the registered
`gemma_en_de_libreoffice`, train split, our packed PrefixLM converter, every budget), each
pipeline's examples/s and CPU cores busy, with tf.data's autotuning on (the default) and off.
It shows how far one pipeline's rate can be from the next one's in the same process.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

import feature_converters as fc  # noqa: E402
from benchmarks import per_example_steps  # noqa: E402
import gemma_tasks  # noqa: E402,F401  (registers the tasks)
from gemma_tasks import preprocessors, sources, tokenization  # noqa: E402
from gemma_seqio.special_tokens import BOS_ID  # noqa: E402

CONSUME_BATCH = 256
BENCH_TASKS = ("bench_en_de", "bench_synthetic_long")


def load_pairs(n: int):
  path = os.path.join(sources.DATA_DIR, "libreoffice_en_de.train.jsonl.gz")
  en, de = [], []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if row["en"].strip() and row["de"].strip():  # the task's filter drops the others
        en.append(row["en"])
        de.append(row["de"])
      if len(en) == n:
        break
  return en, de


def register_tasks(en, de, num_synthetic: int, max_len: int, seed: int = 0):
  for name in BENCH_TASKS:
    seqio.TaskRegistry.remove(name)
  features = seqio.get_mixture_or_task("gemma_en_de_libreoffice").output_features

  def pairs_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({"en": en, "de": de})

  registered = seqio.get_mixture_or_task("gemma_en_de_libreoffice")
  seqio.TaskRegistry.add(
      "bench_en_de", source=seqio.FunctionDataSource(pairs_fn, splits=["train"],
                                                     num_input_examples={"train": len(en)}),
      preprocessors=list(registered.preprocessors), output_features=registered.output_features,
      metric_fns=[])

  rng = np.random.default_rng(seed)
  vocab_size = features["targets"].vocabulary.vocab_size
  lengths_in = rng.integers(1, 2 * max_len + 1, num_synthetic)
  lengths_tg = rng.integers(1, max_len + 1, num_synthetic)
  tokens_in = tf.RaggedTensor.from_row_lengths(
      rng.integers(3, vocab_size, lengths_in.sum()).astype(np.int32), lengths_in)
  tokens_tg = tf.RaggedTensor.from_row_lengths(
      rng.integers(3, vocab_size, lengths_tg.sum()).astype(np.int32), lengths_tg)

  def synthetic_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({"inputs": tokens_in, "targets": tokens_tg}).map(
        lambda ex: {k: v for k, v in ex.items()})

  seqio.TaskRegistry.add(
      "bench_synthetic_long",
      source=seqio.FunctionDataSource(synthetic_fn, splits=["train"],
                                      num_input_examples={"train": num_synthetic}),
      preprocessors=[], output_features=features, metric_fns=[])


def remove_tasks():
  for name in BENCH_TASKS:
    seqio.TaskRegistry.remove(name)


def converters(family: str, pack: bool, packing: str = fc.IN_ORDER):
  if family == "prefix_lm":
    return (seqio.PrefixLMFeatureConverter(pack=pack, bos_id=BOS_ID),
            fc.GemmaPrefixLMFeatureConverter(pack=pack, packing=packing))
  if family == "lm":
    return (seqio.LMFeatureConverter(pack=pack, bos_id=BOS_ID),
            fc.GemmaLMFeatureConverter(pack=pack, packing=packing))
  return (seqio.EncDecFeatureConverter(pack=pack, bos_id=BOS_ID),
          fc.GemmaEncDecFeatureConverter(pack=pack, packing=packing))


def make_dataset(task, lengths, converter):
  if converter is None:
    ds = seqio.get_mixture_or_task(task).get_dataset(lengths, split="train", shuffle=False)
    return ds.padded_batch(CONSUME_BATCH)
  return seqio.get_dataset(task, lengths, dataset_split="train", shuffle=False,
                           feature_converter=converter, batch_size=None).batch(CONSUME_BATCH)


def make_mixture(name, lengths, converter, examples: int):
  """The first `examples` examples of a mixture (seed 0), packed by `converter`."""
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False,
                                                   seed=0)
  ds = converter(ds.take(examples), lengths)
  return ds.batch(CONSUME_BATCH)


def consume(ds, digest: bool):
  """Iterate; count non-padding tokens and model rows; optionally hash the content."""
  h = hashlib.sha1() if digest else None
  tokens = rows = positions = segments = 0
  for batch in ds:
    if "decoder_segment_ids" in batch:  # packed: one segment per task example
      segments += int(batch["decoder_segment_ids"].numpy().max(axis=1).sum())
    if "decoder_target_tokens" in batch:
      main = [batch["decoder_target_tokens"]]
      if "encoder_input_tokens" in batch:
        main.append(batch["encoder_input_tokens"])
      for t in main:
        a = t.numpy()
        tokens += int(np.count_nonzero(a))
        positions += a.size
      rows += int(main[0].shape[0])
      if h is not None:
        for k in sorted(batch):
          h.update(k.encode())
          h.update(batch[k].numpy().tobytes())
    else:  # task features (tokenize only), 0-padded by padded_batch
      for k in ("inputs", "targets"):
        a = batch[k].numpy()
        tokens += int(np.count_nonzero(a))
        if h is not None:
          h.update(a.tobytes())
      rows += int(batch["targets"].shape[0])
  return tokens, rows, positions, segments, (h.hexdigest() if h else None)


def measure(pipelines, runs: int):
  """pipelines: {label: zero-arg dataset factory}. Returns {label: stats} (alternating runs)."""
  stats = {}
  for label, make in pipelines.items():  # warm-up, with content digest
    tokens, rows, positions, segments, dig = consume(make(), digest=True)
    stats[label] = {"tokens": tokens, "rows": rows, "positions": positions,
                    "segments": segments, "digest": dig, "times": []}
  for _ in range(runs):
    for label, make in pipelines.items():
      ds = make()
      start = time.perf_counter()
      consume(ds, digest=False)
      stats[label]["times"].append(time.perf_counter() - start)
  for s in stats.values():
    s["time"] = statistics.median(s["times"])
  return stats


def fmt_row(case, label, s, n_examples):
  fill = s["tokens"] / s["positions"] if s["positions"] else float("nan")
  return (f"| {case} | {label} | {n_examples / s['time']:,.0f} | {s['tokens'] / s['time']:,.0f} | "
          f"{fill:.3f} | {s['rows']:,} | {s['time']:.2f} |")


def profile_stages(lengths, n, runs):
  """Examples/s of ever longer prefixes of the `bench_en_de` pipeline: where the time goes."""
  task = seqio.get_mixture_or_task("bench_en_de")
  features = task.output_features
  ref, ours = converters("prefix_lm", True)

  def source():
    return task.source.get_dataset("train", shuffle=False)

  def formatted():
    return preprocessors.translate_en_de(source())

  def tokenized():
    return tokenization.tokenize(formatted(), features)

  stages = {
      "source (in-memory pairs)": lambda: source().batch(CONSUME_BATCH),
      "+ filter and format as Gemma turns": lambda: formatted().batch(CONSUME_BATCH),
      "+ tokenize (per-example map)": lambda: tokenized().padded_batch(CONSUME_BATCH),
      "+ append_eos_after_trim, trim (= Task.get_dataset)":
          lambda: task.get_dataset(lengths, split="train",
                                   shuffle=False).padded_batch(CONSUME_BATCH),
      "+ our packed PrefixLM converter": lambda: make_dataset("bench_en_de", lengths, ours),
      "+ seqio packed PrefixLM converter": lambda: make_dataset("bench_en_de", lengths, ref),
  }
  print(f"\n## where the time goes: bench_en_de, {lengths['inputs']}/{lengths['targets']}, "
        "cumulative stages\n")
  print("| stage | examples/s | us/example | added us/example |\n|---|---:|---:|---:|")
  previous = stage_before_converters = 0.0
  for label, make in stages.items():
    for _ in make():  # warm-up
      pass
    times = []
    for _ in range(runs):
      ds = make()  # graph construction is not part of the throughput
      start = time.perf_counter()
      for _ in ds:
        pass
      times.append(time.perf_counter() - start)
    us = statistics.median(times) / n * 1e6
    added = us - previous if "seqio" not in label else us - stage_before_converters
    if label.startswith("+ append_eos"):
      stage_before_converters = us
    print(f"| {label} | {1e6 / us:,.0f} | {us:.0f} | {added:+.0f} |", flush=True)
    if "converter" not in label:
      previous = us


def sentencepiece_limit(task, split: str, runs: int) -> float:
  """Examples/s of raw SentencePiece (all CPUs) on the task's own formatted strings.

  The strings are the `*_pretokenized` features the task itself produces (its prompts and
  answers, or the LM task's prose), so this is what the tokenizer allows for exactly this work.
  """
  strings, n = [], 0
  ds = task.preprocess_precache(task.source.get_dataset(split, shuffle=False))
  for ex in ds.as_numpy_iterator():
    strings += [ex[k].decode() for k in ("inputs_pretokenized", "targets_pretokenized")
                if k in ex and ex[k]]
  n = task.num_input_examples(split)
  sp = task.output_features["targets"].vocabulary.tokenizer
  times = []
  for _ in range(runs + 1):
    start = time.perf_counter()
    sp.encode(strings, num_threads=os.cpu_count())
    times.append(time.perf_counter() - start)
  return n / statistics.median(times[1:])


def each_run(stats, n: int) -> str:
  """Examples/s of every timed run: a pipeline runs fast or at about half speed (README)."""
  return ", ".join(f"{n / t:,.0f}" for t in stats["times"])


REGISTERED_TASKS = ("gemma_en_de_gettext", "gemma_trivia_qa_open", "gemma_quiz_qa",
                    "gemma_lm_python_docs")


def registered_rows(budgets, runs: int, mixture_examples: int, others=REGISTERED_TASKS,
                    mixtures=("gemma_qa_mix", "gemma_all")):
  """The registered tasks and mixtures, packed PrefixLM: ours next to seqio-style steps."""
  ref_conv, our_conv = converters("prefix_lm", True)
  cases = [("gemma_en_de_libreoffice", b) for b in budgets]
  cases += [(name, budgets[0]) for name in others]
  print("\n## registered tasks (their JSONL sources), packed PrefixLM, train split\n")
  print("anchor = the same steps one example at a time (`benchmarks/per_example_steps.py`, "
        "seqio.preprocessors.tokenize) + seqio.PrefixLMFeatureConverter(pack=True, bos_id=2); "
        "limit = raw SentencePiece on the task's own formatted strings, "
        f"{os.cpu_count()} threads\n")
  print("| task | lengths | anchor ex/s | ours ex/s | ours/anchor | limit ex/s | ours/limit | "
        "identical | ours, each run |\n|---|---|---:|---:|---:|---:|---:|---|---|")
  ratios = []
  try:
    for name, (li, lt) in cases:
      lengths = {"inputs": li, "targets": lt}
      task = seqio.get_mixture_or_task(name)
      per_example_steps.register_like(name, f"{name}_per_example")
      n = task.num_input_examples("train")
      res = measure({
          "anchor": lambda: make_dataset(f"{name}_per_example", lengths, ref_conv),
          "ours": lambda: make_dataset(name, lengths, our_conv),
      }, runs)
      limit = sentencepiece_limit(task, "train", runs)
      a, o = n / res["anchor"]["time"], n / res["ours"]["time"]
      same = res["anchor"]["digest"] == res["ours"]["digest"]
      print(f"| {name} | {li}/{lt} | {a:,.0f} | {o:,.0f} | {o / a:.2f}x | {limit:,.0f} | "
            f"{o / limit:.2f} | {'yes' if same else 'NO'} | {each_run(res['ours'], n)} |",
            flush=True)
      ratios.append((f"{li}/{lt} registered {name} prefix_lm packed, vs per-example steps",
                     o / a, same))
    li, lt = budgets[0]
    lengths = {"inputs": li, "targets": lt}
    for mixture in mixtures:
      mix = seqio.get_mixture_or_task(mixture)
      anchor = f"{mixture}_per_example"
      seqio.MixtureRegistry.remove(anchor)
      for t in mix.tasks:
        per_example_steps.register_like(t.name, f"{t.name}_per_example")
      seqio.MixtureRegistry.add(anchor, [(f"{t.name}_per_example", mix.get_rate(t))
                                         for t in mix.tasks])
      res = measure({
          "anchor": lambda: make_mixture(anchor, lengths, ref_conv, mixture_examples),
          "ours": lambda: make_mixture(mixture, lengths, our_conv, mixture_examples),
      }, runs)
      a = res["anchor"]["segments"] / res["anchor"]["time"]
      o = res["ours"]["segments"] / res["ours"]["time"]
      print(f"| mixture {mixture} (first {mixture_examples:,} examples, seed 0) | {li}/{lt} | "
            f"{a:,.0f} | {o:,.0f} | {o / a:.2f}x | | | "
            f"{'yes' if res['anchor']['digest'] == res['ours']['digest'] else 'NO'} | "
            f"{each_run(res['ours'], res['ours']['segments'])} |", flush=True)
      ratios.append((f"{li}/{lt} mixture {mixture} prefix_lm packed, vs per-example steps",
                     o / a, res["anchor"]["digest"] == res["ours"]["digest"]))
  finally:
    for name in list(seqio.TaskRegistry.names()):
      if name.endswith("_per_example"):
        seqio.TaskRegistry.remove(name)
    for name in list(seqio.MixtureRegistry.names()):
      if name.endswith("_per_example"):
        seqio.MixtureRegistry.remove(name)
  return ratios


def spread_rows(budgets, pipelines: int):
  """Examples/s and cores busy of `pipelines` new pipelines in a row, autotuning on and off."""
  name = "gemma_en_de_libreoffice"
  n = seqio.get_mixture_or_task(name).num_input_examples("train")
  _, ours = converters("prefix_lm", True)
  print(f"\n## {pipelines} new pipelines in a row: {name}, train split, our packed PrefixLM "
        "converter\n")
  print("| lengths | tf.data autotuning | examples/s of each pipeline (cores busy) | median |\n"
        "|---|---|---|---:|")
  for li, lt in budgets:
    lengths = {"inputs": li, "targets": lt}
    for autotune in (True, False):
      options = tf.data.Options()
      options.autotune.enabled = autotune
      rates = []
      for _ in range(pipelines):
        ds = make_dataset(name, lengths, ours).with_options(options)
        cpu, start = os.times(), time.perf_counter()
        consume(ds, digest=False)
        wall, cpu_end = time.perf_counter() - start, os.times()
        busy = (cpu_end.user - cpu.user + cpu_end.system - cpu.system) / wall
        rates.append((n / wall, busy))
      cells = ", ".join(f"{r:,.0f} ({b:.1f})" for r, b in rates)
      print(f"| {li}/{lt} | {'on' if autotune else 'off'} | {cells} | "
            f"{statistics.median(r for r, _ in rates):,.0f} |", flush=True)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--examples", type=int, default=20000, help="real en->de pairs")
  p.add_argument("--synthetic", type=int, default=5000, help="synthetic long examples")
  p.add_argument("--runs", type=int, default=3, help="timed runs per row (after a warm-up)")
  p.add_argument("--lengths", default="128:128,512:256", help="inputs:targets budgets")
  p.add_argument("--families", default="prefix_lm,lm,enc_dec")
  p.add_argument("--registered_tasks", default=",".join(REGISTERED_TASKS),
                 help="registered tasks measured (besides gemma_en_de_libreoffice at every "
                      "budget), at the first budget")
  p.add_argument("--mixtures", default="gemma_qa_mix,gemma_all")
  p.add_argument("--mixture_examples", type=int, default=20000,
                 help="examples taken from each mixture in the registered rows")
  p.add_argument("--only-registered", action="store_true",
                 help="only the rows of the registered tasks and mixtures")
  p.add_argument("--spread", type=int, default=0, metavar="N",
                 help="only this: N new pipelines in a row of the registered LibreOffice task, "
                      "each one's rate, tf.data autotuning on and off")
  p.add_argument("--skip-registered", action="store_true",
                 help="skip the headline rows on the registered JSONL task")
  args = p.parse_args(argv)

  budgets = [tuple(int(x) for x in b.split(":")) for b in args.lengths.split(",")]
  en, de = load_pairs(args.examples)
  register_tasks(en, de, args.synthetic, max(li for li, _ in budgets))
  print(f"# gemma-seqio pipeline benchmark: {len(en):,} real pairs, {args.synthetic:,} synthetic, "
        + (f"{args.spread} new pipelines per row, " if args.spread else
           f"median of {args.runs} runs after a warm-up, ")
        + f"{os.cpu_count()} CPUs, "
        f"seqio {seqio.__version__ if hasattr(seqio, '__version__') else '?'}, TF {tf.__version__}")
  print(f"# command: {' '.join(['python -m benchmarks.pipeline'] + (argv or sys.argv[1:]))}")
  header = ("| case | pipeline | examples/s | non-pad tokens/s | fill | rows | s |\n"
            "|---|---|---:|---:|---:|---:|---:|")
  ratios = []
  if args.spread:
    try:
      spread_rows(budgets, args.spread)
    finally:
      remove_tasks()
    return
  try:
    for li, lt in [] if args.only_registered else budgets:
      lengths = {"inputs": li, "targets": lt}
      print(f"\n## lengths {li}/{lt}\n")
      print(header)
      n = len(en)
      tok = measure({"tokenize only (task, no converter)":
                     lambda: make_dataset("bench_en_de", lengths, None)}, args.runs)
      for label, s in tok.items():
        print(fmt_row("en-de", label, s, n), flush=True)
      for family in args.families.split(","):
        fam_lengths = {"targets": lt} if family == "lm" else lengths
        for pack in (True, False):
          ref, ours = converters(family, pack)
          mode = "packed" if pack else "unpacked"
          pipes = {
              f"seqio {family} {mode}":
                  lambda ref=ref: make_dataset("bench_en_de", fam_lengths, ref),
              f"ours {family} {mode}":
                  lambda ours=ours: make_dataset("bench_en_de", fam_lengths, ours),
          }
          if pack:
            best = converters(family, True, fc.BEST_FIT)[1]
            pipes[f"ours {family} packed best_fit"] = (
                lambda best=best: make_dataset("bench_en_de", fam_lengths, best))
          res = measure(pipes, args.runs)
          labels = list(res)
          for label in labels:
            print(fmt_row("en-de", label, res[label], n), flush=True)
          a, b = res[labels[0]], res[labels[1]]
          ratios.append((f"{li}/{lt} en-de {family} {mode}", a["time"] / b["time"],
                         a["digest"] == b["digest"]))
          # Synthetic long sequences (no tokenization): converter cost dominates.
          syn = measure({
              f"seqio {family} {mode}": lambda ref=ref: make_dataset("bench_synthetic_long",
                                                                     fam_lengths, ref),
              f"ours {family} {mode}": lambda ours=ours: make_dataset("bench_synthetic_long",
                                                                      fam_lengths, ours),
          }, args.runs)
          sl = list(syn)
          for label in sl:
            print(fmt_row("synthetic long", label, syn[label], args.synthetic), flush=True)
          ratios.append((f"{li}/{lt} synthetic {family} {mode}",
                         syn[sl[0]]["time"] / syn[sl[1]]["time"],
                         syn[sl[0]]["digest"] == syn[sl[1]]["digest"]))
    li, lt = budgets[0]
    if not args.only_registered:
      profile_stages({"inputs": li, "targets": lt}, len(en), args.runs)
    if not args.skip_registered:
      ratios += registered_rows(
          budgets, args.runs, args.mixture_examples,
          [t for t in args.registered_tasks.split(",") if t and t != "gemma_en_de_libreoffice"],
          [m for m in args.mixtures.split(",") if m])
    print("\n## ratios ours/seqio (examples/s; identical = same output bytes, all features)\n")
    print("| comparison | ours/seqio | identical |\n|---|---:|---|")
    for name, r, same in ratios:
      print(f"| {name} | {r:.2f}x | {'yes' if same else 'NO'} |")
  finally:
    remove_tasks()


if __name__ == "__main__":
  main()
