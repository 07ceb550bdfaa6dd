"""Local parallel caching: N OS processes, each caching a disjoint part of a task, then one merge.

Beam's FnApiRunner in `multi_processing` mode was slower with 2 workers than with 1 on a 2-CPU
machine (its runner process moves every element through gRPC and the shuffles). Instead,
`cache_tasks(..., workers=N)` starts N processes that each run seqio's own pipeline with the
in-process FnApiRunner (the fast path) on every N-th source shard of the task, writing into
`{task_dir}/part-{k}-of-{P}/`, and then merges the parts into one ordinary seqio cache:

  * the source shard list is the one a single process would use (`ShardedPreprocessTask`), and
    every part walks it (its own shards `i % P == k` first, then the others from the far end),
    emitting a shard only if it claims it first (`claim_shard`, an exclusive file create in a
    local scratch directory). Shards keep their global index and count, so each is read with
    the same `ShardInfo` and the same per-shard preprocessor seed as in a one-process run: the
    set of examples is exactly the same, and a part that starts late (a child imports
    TensorFlow for seconds) just emits fewer shards;
  * the split's output shard count S is the one seqio's `run_pipeline` would choose
    (`max(source shards, --min_shards)`, capped by `--max_shards`); part k writes `S_k` of them
    and the merge renames them to `{split}.tfrecord-{offset_k + j:05d}-of-{S:05d}` (or
    `.array_record-...`), the names seqio's `_CachedDataSource` derives from `info.num_shards`;
  * `info.{split}.json` is seqio's info with `num_shards` = S; `stats.{split}.json` sums the
    counts (`examples`, `*_tokens`, `*_chars`) and takes the maximum of `*_max_tokens`;
  * `COMPLETED` (with the fingerprint metadata) is written last, by the caller, only after every
    part succeeded and was merged.

Same examples and the same files as one process, not the same bytes: record order within and
across shards differs (seqio's pipeline reshuffles anyway), and an ArrayRecord shard's
`group_size` (seqio sets it to the sink's shard count) is the part's share of S, not S. That
only changes how records are grouped inside the file, not what a reader gets.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Mapping, Sequence

import tensorflow as tf

PART_DIR = "part-{k}-of-{parts}"


@dataclasses.dataclass
class SplitPlan:
  """How one split is divided: source shards (global count) and output shards per part."""
  source_shards: int
  output_shards: int
  parts: int

  def source_indices(self, k: int) -> List[int]:
    """Global source shard indices of part k (every P-th, so long and short shards mix)."""
    return list(range(k, self.source_shards, self.parts))

  def output_counts(self) -> List[int]:
    """Output shards written by each part: S split as evenly as possible.

    >>> SplitPlan(source_shards=4, output_shards=5, parts=2).output_counts()
    [3, 2]
    """
    base, extra = divmod(self.output_shards, self.parts)
    return [base + (1 if k < extra else 0) for k in range(self.parts)]


def output_shard_count(source_shards: int, min_shards: int, max_shards: int) -> int:
  """The shard count seqio's `run_pipeline` picks for a split (same rule, same flags).

  >>> output_shard_count(4, 64, 0), output_shard_count(4, 0, 0), output_shard_count(4, 64, 8)
  (64, 4, 8)
  """
  n = max(source_shards, min_shards) if min_shards > 0 else source_shards
  return min(n, max_shards) if max_shards > 0 else n


def plan_parts(source_shards: Mapping[str, int], workers: int, min_shards: int,
               max_shards: int) -> Dict[str, SplitPlan]:
  """One plan per split, all with the same number of parts P <= workers.

  P is limited by the fewest source shards and output shards of any split, so every part
  writes at least one output shard of every split (possibly empty, if the other parts claimed
  all its source shards; `merge_info` skips an empty part's `{}`). P == 1 means: no gain, run
  in one process.

  >>> plan_parts({"train": 4, "test": 1}, 2, 2, 0)["train"].parts
  1
  >>> plan_parts({"train": 4, "test": 4}, 2, 2, 0)["test"]
  SplitPlan(source_shards=4, output_shards=4, parts=2)
  """
  outputs = {s: output_shard_count(n, min_shards, max_shards) for s, n in source_shards.items()}
  parts = max(1, min([workers] + list(source_shards.values()) + list(outputs.values())))
  return {s: SplitPlan(n, outputs[s], parts) for s, n in source_shards.items()}


def claim_shard(claims_dir: str, name: str) -> bool:
  """True for the first process that claims `name` in `claims_dir` (a local directory shared by
  the parts), False for every later one: an exclusive create is atomic on a local filesystem.

  >>> import tempfile; d = tempfile.mkdtemp()
  >>> claim_shard(d, "task.train.3"), claim_shard(d, "task.train.3"), claim_shard(d, "task.train.4")
  (True, False, True)
  """
  try:
    os.close(os.open(os.path.join(claims_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return True
  except FileExistsError:
    return False


def part_dir(task_dir: str, k: int, parts: int) -> str:
  """Output cache dir of part k; inside the task dir, so a failed run's cleanup removes it."""
  return os.path.join(task_dir, PART_DIR.format(k=k, parts=parts))


def merge_stats(stats: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
  """seqio `stats.{split}.json` of the union of disjoint parts.

  >>> merge_stats([{"examples": 2, "inputs_tokens": 5, "inputs_max_tokens": 3},
  ...              {"examples": 1, "inputs_tokens": 4, "inputs_max_tokens": 4}])
  {'examples': 3, 'inputs_max_tokens': 4, 'inputs_tokens': 9}
  """
  merged: Dict[str, Any] = {}
  for part in stats:
    for key, value in part.items():
      if key not in merged:
        merged[key] = value
      elif key.endswith("_max_tokens"):
        merged[key] = max(merged[key], value)
      elif key == "examples" or key.endswith("_tokens") or key.endswith("_chars"):
        merged[key] += value
      elif merged[key] != value:
        # Anything else (e.g. task_ids) must agree across parts; refuse rather than guess.
        raise ValueError(f"cannot merge stats key {key!r}: {merged[key]!r} vs {value!r}")
  return dict(sorted(merged.items()))


def merge_info(infos: Sequence[Mapping[str, Any]], num_shards: int) -> Dict[str, Any]:
  """seqio `info.{split}.json` of the merged split: the parts' features, the total shard count.

  A part that wrote no example has `{}` (seqio's `GetInfo` of an empty collection); the others
  must agree on the features.
  """
  non_empty = [dict(i) for i in infos if i]
  if not non_empty:
    return {}
  for other in non_empty[1:]:
    if other.get("features") != non_empty[0].get("features"):
      raise ValueError(f"parts disagree on features: {non_empty[0].get('features')} vs "
                       f"{other.get('features')}")
  info = dict(non_empty[0])
  info["num_shards"] = num_shards
  return info


def _read_json(path: str) -> Any:
  with tf.io.gfile.GFile(path) as f:
    text = f.read().strip()
  return json.loads(text) if text else {}


def _write_json(path: str, value: Any) -> None:
  # The same text seqio's `WriteJson` writes (sorted keys, indent 2, one trailing newline).
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(value, sort_keys=True, indent=2) + "\n")


def _data_prefix(task_dir: str, split: str, output_format: str) -> str:
  # seqio's names: `get_cached_tfrecord_prefix` and `{split}.array_record` in run_pipeline.
  ext = "array_record" if output_format == "arrayrecord" else "tfrecord"
  return os.path.join(task_dir, f"{split}.{ext}")


def merge_parts(task_dir: str, plans: Mapping[str, SplitPlan], output_format: str) -> None:
  """Moves every part's shards into `task_dir` under their global names and writes the merged
  info and stats files; removes the part directories. Does not write `COMPLETED`."""
  task_name = os.path.basename(task_dir)
  parts = next(iter(plans.values())).parts
  dirs = [os.path.join(part_dir(task_dir, k, parts), task_name) for k in range(parts)]
  for d in dirs:
    if not tf.io.gfile.exists(os.path.join(d, "COMPLETED")):
      raise RuntimeError(f"part {d} has no COMPLETED: that part did not finish")
  for split, plan in plans.items():
    counts, offset = plan.output_counts(), 0
    for d, count in zip(dirs, counts):
      src_prefix = _data_prefix(d, split, output_format)
      pattern = re.compile(re.escape(os.path.basename(src_prefix)) + r"-(\d{5})-of-(\d{5})\Z")
      found = sorted(os.path.basename(p) for p in tf.io.gfile.glob(src_prefix + "-*"))
      indices = sorted(int(m.group(1)) for m in map(pattern.match, found)
                       if m and int(m.group(2)) == count)
      if indices != list(range(count)):
        raise RuntimeError(f"{d}: expected {count} {split} shards, found {found}")
      for j in range(count):
        tf.io.gfile.rename(f"{src_prefix}-{j:05d}-of-{count:05d}",
                           f"{_data_prefix(task_dir, split, output_format)}-"
                           f"{offset + j:05d}-of-{plan.output_shards:05d}", overwrite=True)
      offset += count
    infos = [_read_json(os.path.join(d, f"info.{split}.json")) for d in dirs]
    stats = [_read_json(os.path.join(d, f"stats.{split}.json")) for d in dirs]
    _write_json(os.path.join(task_dir, f"info.{split}.json"),
                merge_info(infos, plan.output_shards))
    _write_json(os.path.join(task_dir, f"stats.{split}.json"), merge_stats(stats))
  for k in range(parts):
    tf.io.gfile.rmtree(part_dir(task_dir, k, parts))


def remove_parts(task_dir: str) -> None:
  """Removes part directories (after a failed run, so the task dir holds no half-written part)."""
  for d in tf.io.gfile.glob(os.path.join(task_dir, "part-*-of-*")):
    tf.io.gfile.rmtree(d)
