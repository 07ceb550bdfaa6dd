"""Where a jitted call's time goes: XLA's own op timings (`jax.profiler`), grouped by model part.

    >>> import jax, jax.numpy as jnp
    >>> f = jax.jit(lambda x: jnp.tanh(x @ x))
    >>> x = jnp.ones((256, 256))
    >>> rows = profile(f, (x,), runs=2)
    >>> rows[0].part, rows[0].seconds > 0
    ('dot_general', True)

The trace's events name XLA's fused ops (`ynn_fusion.54`, `transpose_copy_fusion.7`); the
compiled HLO maps each to the `op_name` JAX recorded for it, e.g.
`jit(step_fn)/transpose(jvp(Transformer))/layer_2/attn/bkgts,bskh->btkgh/dot_general`. A part is
that name without the jit wrapper and the layer number, with `backward` for the gradient pass,
so the four layers' attention products add up in one row.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from typing import Callable, List, NamedTuple, Sequence

_OP = re.compile(r'%([\w.\-]+) = [^\n]*?metadata=\{op_name="([^"]+)"')


class Part(NamedTuple):
  part: str         # e.g. "backward attn/btkgh,bskh->bkgts/dot_general"
  seconds: float    # per call
  share: float      # of all op time in the call


def _part(op_name: str) -> str:
  backward = "transpose(" in op_name
  name = re.sub(r"^jit\([^)]*\)/", "", op_name)
  name = re.sub(r"(transpose|jvp|checkpoint|remat|while|body|cond|branch_\d+_fun)\(([^()]*)\)",
                r"\2", name)
  name = re.sub(r"\b(transpose|jvp|Transformer|jit)\b/?|\(|\)", "", name)
  name = re.sub(r"layer_\d+/", "", name).strip("/")
  return ("backward " if backward else "") + (name or op_name)


def op_parts(hlo_text: str) -> dict:
  """{XLA op name: model part} from compiled HLO text."""
  return {name: _part(op) for name, op in _OP.findall(hlo_text)}


def profile(fn: Callable, args: Sequence, runs: int = 3, top: int = 12) -> List[Part]:
  """The `top` parts of `fn(*args)` (jitted), time per call, largest first; the rest in 'other'.
  `fn` is called once before tracing (compilation) and `runs` times under the profiler."""
  import jax  # pylint: disable=g-import-not-at-top
  parts = op_parts(fn.lower(*args).compile().as_text())
  jax.block_until_ready(fn(*args))
  with tempfile.TemporaryDirectory() as out:
    jax.profiler.start_trace(out)
    for _ in range(runs):
      jax.block_until_ready(fn(*args))
    jax.profiler.stop_trace()
    files = glob.glob(f"{out}/plugins/profile/*/*.trace.json.gz")
    if not files:
      raise RuntimeError("jax.profiler wrote no trace.json.gz: cannot attribute op time")
    with gzip.open(files[0]) as f:
      events = json.load(f)["traceEvents"]
  totals = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in parts:
      totals[parts[e["name"]]] += e["dur"] * 1e-6 / runs
  whole = sum(totals.values()) or 1.0
  rows = [Part(p, s, s / whole) for p, s in totals.most_common(top)]
  rest = whole - sum(r.seconds for r in rows)
  if rest > 0 and len(totals) > top:
    rows.append(Part("other", rest, rest / whole))
  return rows
