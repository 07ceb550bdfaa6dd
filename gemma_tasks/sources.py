"""A JSONL `seqio.DataSource`: sharded (optionally gzipped) files, named fields, clear errors.

>>> import tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> with gzip.open(os.path.join(tmp.name, "pairs-0.jsonl.gz"), "wt") as f:
...   _ = f.write('{"en": "Find Bar", "de": "Suchleiste"}\\n{"en": "Print", "de": "Drucken"}\\n')
>>> src = JsonlDataSource({"train": os.path.join(tmp.name, "pairs-*.jsonl.gz")},
...                       fields={"en": str, "de": str})
>>> [{k: v.numpy() for k, v in ex.items()} for ex in src.get_dataset("train", shuffle=False)]
[{'en': b'Find Bar', 'de': b'Suchleiste'}, {'en': b'Print', 'de': b'Drucken'}]
>>> with open(os.path.join(tmp.name, "bad.jsonl"), "w") as f:
...   _ = f.write('{"en": "Print"}\\n')
>>> list(read_jsonl(os.path.join(tmp.name, "bad.jsonl"), {"en": str, "de": str}))
Traceback (most recent call last):
ValueError: /tmp/.../bad.jsonl:1: missing field 'de' (has ['en']) in /tmp/.../bad.jsonl
>>> tmp.cleanup()

Field types: `str` -> tf.string scalar, `int` -> tf.int64, `float` -> tf.float32,
`list` (of strings) -> tf.string vector (e.g. TriviaQA's answer aliases).

Bad input never passes silently and never loses data:
  * a line that is not JSON -> `ValueError("pairs-0.jsonl.gz:17: not valid JSON: ...")`;
  * a line that lacks a field -> `ValueError("pairs-0.jsonl.gz:17: missing field 'de' ...")`;
  * bytes that are not UTF-8 -> an error naming file, line and byte offset (or, with
    `invalid_utf8="replace"`, U+FFFD in their place, counted in a warning);
  * a number that does not fit its field -> `ValueError("n.jsonl:2: field 'n' must be a whole
    number, got 3.7")` (never truncated to 3), or "... is out of the int64 range" (`2**70`);
  * a truncated or corrupt `.gz` -> `ValueError("pairs-0.jsonl.gz: truncated or corrupt gzip
    file (after line 811): ...")`;
  * a UTF-8 byte order mark at the start of a file (as some editors write) is skipped.
  * empty strings are kept as they are; the preprocessors decide what an empty field means.
"""
from __future__ import annotations

import glob
import gzip
import itertools
import json
import logging
import os
import random
import zlib
from typing import Iterator, Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

from gemma_tasks import batched

_SPECS = {
    str: tf.TensorSpec([], tf.string),
    int: tf.TensorSpec([], tf.int64),
    float: tf.TensorSpec([], tf.float32),
    list: tf.TensorSpec([None], tf.string),
}
READ_BATCH = 256  # rows per generator step
_LENGTH = "__length_of_"
_INT64 = (-2**63, 2**63 - 1)
_FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without importing numpy
_BOM = b"\xef\xbb\xbf"
# What gzip raises for a cut or damaged file: EOFError for a cut stream, BadGzipFile for a bad
# header, zlib.error for damaged compressed data.
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _lines(path: str) -> Iterator[bytes]:
  """The raw lines of `path`; a byte order mark at the start is dropped, a damaged gzip stream
  is a `ValueError` naming the file.

  >>> import tempfile
  >>> with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
  ...   _ = f.write(b'\\xef\\xbb\\xbf{"t": "first"}\\n{"t": "second"}\\n')   # starts with EF BB BF
  ...   f.flush()
  ...   list(_lines(f.name))
  [b'{"t": "first"}\\n', b'{"t": "second"}\\n']
  """
  with _open(path) as f:
    n = 0
    try:
      for n, raw in enumerate(f, 1):
        if n == 1 and raw.startswith(_BOM):
          raw = raw[len(_BOM):]
        yield raw
    except _GZIP_ERRORS as e:
      raise ValueError(f"{path}: truncated or corrupt gzip file (after line {n}): "
                       f"{type(e).__name__}: {e}; re-copy or re-create it") from None


def _convert(value, kind, where: str, field: str):
  if kind is str:
    if not isinstance(value, str):
      raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value
  if kind is list:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      raise ValueError(f"{where}: field {field!r} must be a list of strings")
    return value
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"{where}: field {field!r} must be a number, got {type(value).__name__}")
  if kind is int:
    # int(3.7) would be 3: a fraction is an error, a whole float (3.0) is that integer.
    if isinstance(value, float) and not value.is_integer():
      raise ValueError(f"{where}: field {field!r} must be a whole number, got {value!r}")
    if not _INT64[0] <= value <= _INT64[1]:
      raise ValueError(f"{where}: field {field!r} is out of the int64 range, got {value!r}")
    return int(value)
  if abs(value) > _FLOAT32_MAX:  # TF would store it as inf (or fail without naming the line)
    raise ValueError(f"{where}: field {field!r} is out of the float32 range, got {value!r}")
  return float(value)


def read_jsonl(path: str, fields: Mapping[str, type], *, invalid_utf8: str = "error",
               shard: Optional[seqio.ShardInfo] = None) -> Iterator[dict]:
  """Yields {field: value} for each non-blank line of `path` (pure Python, no TF).

  With `shard`, only lines whose 0-based index i satisfies i % num_shards == index.
  """
  replaced = 0
  for i, raw in enumerate(_lines(path)):
    if shard is not None and i % shard.num_shards != shard.index:
      continue
    where = f"{path}:{i + 1}"
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      if invalid_utf8 != "replace":
        raise ValueError(
            f"{where}: not valid UTF-8 at byte {e.start} ({raw[max(0, e.start - 10):e.end + 10]!r}); "
            "fix the file or pass invalid_utf8='replace'") from None
      line = raw.decode("utf-8", errors="replace")
      replaced += 1
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
      raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    out = {}
    for name, kind in fields.items():
      if name not in row:
        raise ValueError(f"{where}: missing field {name!r} (has {sorted(row)}) in {path}")
      out[name] = _convert(row[name], kind, where, name)
    yield out
  if replaced:
    logging.warning("%s: %d line(s) with invalid UTF-8 bytes replaced by U+FFFD", path, replaced)


def count_lines(path: str) -> int:
  """Number of non-blank lines (= examples) in a JSONL file."""
  return sum(1 for raw in _lines(path) if raw.strip())


class JsonlDataSource(seqio.DataSource):
  """Reads JSON-lines files (plain or .gz) per split; supports arbitrary sharding by line."""

  def __init__(
      self,
      split_to_filepattern: Mapping[str, Union[str, Sequence[str]]],
      *,
      fields: Mapping[str, type],
      num_input_examples: Optional[Mapping[str, int]] = None,
      invalid_utf8: str = "error",
      caching_permitted: bool = True,
  ):
    if invalid_utf8 not in ("error", "replace"):
      raise ValueError(f"invalid_utf8 must be 'error' or 'replace', got {invalid_utf8!r}")
    unknown = [f"{k}: {v!r}" for k, v in fields.items() if v not in _SPECS]
    if unknown:
      raise ValueError(f"JsonlDataSource: unsupported field types {unknown}; use str, int, float or list")
    self._split_to_filepattern = dict(split_to_filepattern)
    self._fields = dict(fields)
    self._invalid_utf8 = invalid_utf8
    super().__init__(splits=self._split_to_filepattern.keys(),
                     num_input_examples=num_input_examples, caching_permitted=caching_permitted)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  @property
  def output_signature(self) -> Mapping[str, tf.TensorSpec]:
    return {k: _SPECS[v] for k, v in self._fields.items()}

  def list_shards(self, split: str) -> Sequence[str]:
    patterns = self._split_to_filepattern[split]
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files = sorted({f for p in patterns for f in glob.glob(p)})
    if not files:
      raise ValueError(f"JsonlDataSource: no file matches {patterns} for split {split!r}")
    return files

  def num_input_examples(self, split: str) -> Optional[int]:
    if self._num_input_examples is None or split not in self._num_input_examples:
      return sum(count_lines(f) for f in self.list_shards(split))
    return self._num_input_examples[split]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # seqio's Task handles these.
    files = list(self.list_shards(split))
    if shuffle:  # file order only; the Task shuffles examples with its buffer.
      random.Random(seed).shuffle(files)
    fields, invalid_utf8 = self._fields, self._invalid_utf8
    lists = [k for k, kind in fields.items() if kind is list]

    def generate():
      rows = itertools.chain.from_iterable(
          read_jsonl(path, fields, invalid_utf8=invalid_utf8, shard=shard_info) for path in files)
      # Batches, not rows: each generator step is a Python call from a TF thread that must take
      # the GIL, and one per row cost ~300 us/row (caching, training input) against ~30 here.
      while True:
        chunk = list(itertools.islice(rows, READ_BATCH))
        if not chunk:
          return
        batch = {k: [row[k] for row in chunk] for k in fields}
        for k in lists:  # ragged rows as their values one after the other + each row's length
          batch[_LENGTH + k] = [len(v) for v in batch[k]]
          batch[k] = list(itertools.chain.from_iterable(batch[k]))
        yield batch

    signature = {k: tf.TensorSpec([None], spec.dtype)   # lists: all values of the batch
                 for k, spec in self.output_signature.items()}
    signature.update({_LENGTH + k: tf.TensorSpec([None], tf.int64) for k in lists})
    batches = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if lists:
      # (Padding every row to the batch's longest list cost ~80 us per TriviaQA example: one
      # list of ~400 aliases made 256 x 400 strings.)
      def ragged(batch):
        out = {k: v for k, v in batch.items() if not k.startswith(_LENGTH)}
        out.update({k: tf.RaggedTensor.from_row_lengths(batch[k], batch[_LENGTH + k])
                    for k in lists})
        return out
      batches = batches.map(ragged)
    # The rows; the registered tasks' batched steps work on the batches when they come next.
    return batched.register_batches(batches)

  def __str__(self):
    return f"JsonlDataSource({self._split_to_filepattern})"


DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def embedded(name: str, splits: Sequence[str], *, fields: Mapping[str, type]) -> JsonlDataSource:
  """A source over the data shipped in `gemma_tasks/data/{name}.{split}.jsonl.gz`."""
  with open(os.path.join(DATA_DIR, "split_sizes.json")) as f:
    sizes = json.load(f)
  return JsonlDataSource(
      {s: os.path.join(DATA_DIR, f"{name}.{s}.jsonl.gz") for s in splits}, fields=fields,
      num_input_examples={s: sizes[f"{name}.{s}"] for s in splits})
