"""The `COMPLETED` file of a cache written by `cache_scripts.cache_tasks`: its metadata (format,
fingerprints, shard sizes), and where a cache's data files are.

`COMPLETED` is written last, after every shard, info and stats file, so keeping the metadata in
it means a cache either has both or neither. A cache written by seqio's own `cache_tasks_main`
has no metadata (`read_metadata` gives None); its files are found all the same.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import seqio
import tensorflow as tf
from seqio import utils as seqio_utils

from gemma_tasks import cache_integrity

METADATA_KEY = "gemma_seqio_cache"
ARRAY_RECORD_SUFFIX = cache_integrity.ARRAY_RECORD_SUFFIX


def completed_contents(output_format: str, fingerprints: Mapping[str, Mapping[str, Any]]) -> str:
  """The JSON text that `cache_tasks` writes into each task's `COMPLETED` file.

  >>> json.loads(completed_contents("tfrecord", {"t": {"fingerprint": "ab", "components": {}}}))
  ... # doctest: +ELLIPSIS
  {'gemma_seqio_cache': 1, 'output_format': 'tfrecord', 'seqio_version': '...', 'tasks': {'t': ...}}
  """
  return json.dumps({
      METADATA_KEY: 1,
      "output_format": output_format,
      "seqio_version": seqio.__version__,
      "tasks": {k: dict(v) for k, v in sorted(fingerprints.items())},
  }, sort_keys=True)


def record_shard_bytes(cache_dir: str, splits) -> None:
  """Adds the size of every data file to our `COMPLETED` (for `integrity`'s check on open).

  Run by `cache_tasks` once the files are final. `COMPLETED` is replaced by a rename, so it is
  never seen half-written; if this step does not happen the cache is complete all the same and
  is checked for missing shards only.
  """
  meta = read_metadata(cache_dir)
  if meta is None:
    return
  meta[cache_integrity.SHARD_BYTES_KEY] = cache_integrity.shard_bytes(cache_dir, splits,
                                                                     meta["output_format"])
  path = os.path.join(cache_dir, "COMPLETED")
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    f.write(json.dumps(meta, sort_keys=True))
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def read_metadata(cache_dir: str) -> Optional[Dict[str, Any]]:
  """The metadata in `cache_dir/COMPLETED`, or None for a cache written by plain seqio.

  >>> import tempfile
  >>> with tempfile.TemporaryDirectory() as d:
  ...   with open(os.path.join(d, "COMPLETED"), "w") as f:
  ...     _ = f.write(completed_contents("arrayrecord", {"t": {"fingerprint": "ab"}}))
  ...   read_metadata(d)["output_format"], read_metadata(d)["tasks"]
  ('arrayrecord', {'t': {'fingerprint': 'ab'}})

  What seqio 0.0.20's own `cache_tasks_main` writes into `COMPLETED` is no metadata:

  >>> with tempfile.TemporaryDirectory() as d:
  ...   with open(os.path.join(d, "COMPLETED"), "w") as f:
  ...     _ = f.write("tfrecord")
  ...   print(read_metadata(d))
  None
  """
  path = os.path.join(cache_dir, "COMPLETED")
  with tf.io.gfile.GFile(path) as f:
    text = f.read().strip()
  try:
    data = json.loads(text) if text else None
  except json.JSONDecodeError:
    # seqio 0.0.20's own main() writes the word 'tfrecord' here (its positional-argument bug).
    return None
  return data if isinstance(data, dict) and METADATA_KEY in data else None


def output_format_of(cache_dir: str, split: str) -> str:
  """'tfrecord' or 'arrayrecord', from the metadata or else from the files present."""
  meta = read_metadata(cache_dir)
  if meta and meta.get("output_format"):
    return meta["output_format"]
  prefix = os.path.join(cache_dir, split + ARRAY_RECORD_SUFFIX)
  return "arrayrecord" if tf.io.gfile.glob(prefix + "-*") else "tfrecord"


def shard_files(cache_dir: str, split: str, output_format: str) -> List[str]:
  """The data files of `split`, as the writer named them (matching info's `num_shards`)."""
  num_shards = cache_integrity.read_json(seqio_utils.get_cached_info_path(cache_dir, split),
                                   cache_dir)["num_shards"]
  prefix = cache_integrity.data_prefix(cache_dir, split, output_format)
  return sorted(tf.io.gfile.glob(f"{prefix}-*-of-*{num_shards}"))
