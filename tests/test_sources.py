"""JsonlDataSource: reading, sharding, and bad input named by file and line."""
import gzip
import json

import pytest
import seqio
import tensorflow as tf

from gemma_tasks import sources


def _write(path, lines, gz=False):
  data = "".join(l + "\n" for l in lines).encode("utf-8") if isinstance(lines[0], str) else b"".join(lines)
  with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
    f.write(data)
  return str(path)


def _read(src, split="train", **kw):
  return [{k: v.numpy() for k, v in ex.items()} for ex in src.get_dataset(split, shuffle=False, **kw)]


def test_reads_sharded_gzip_files_with_named_fields(tmp_path):
  _write(tmp_path / "a-0.jsonl.gz", [json.dumps({"en": "One", "de": "Eins", "x": 1})], gz=True)
  _write(tmp_path / "a-1.jsonl", [json.dumps({"en": "Two", "de": "Zwei"}), "",
                                  json.dumps({"en": "", "de": "Leer"})])
  src = sources.JsonlDataSource({"train": str(tmp_path / "a-*")}, fields={"en": str, "de": str})
  assert _read(src) == [{"en": b"One", "de": b"Eins"}, {"en": b"Two", "de": b"Zwei"},
                        {"en": b"", "de": b"Leer"}]  # empty strings are kept as they are
  assert src.num_input_examples("train") == 3
  assert src.list_shards("train") == [str(tmp_path / "a-0.jsonl.gz"), str(tmp_path / "a-1.jsonl")]


def test_list_fields_and_numbers(tmp_path):
  p = _write(tmp_path / "qa.jsonl", [json.dumps({"question": "Q?", "answers": ["a", "b"], "n": 3})])
  src = sources.JsonlDataSource({"test": p}, fields={"question": str, "answers": list, "n": int})
  (ex,) = _read(src, "test")
  assert ex["answers"].tolist() == [b"a", b"b"] and ex["n"] == 3


def test_rows_cross_read_batches_intact_and_the_dataset_can_be_read_again(tmp_path, monkeypatch):
  # Rows are generated READ_BATCH at a time; a list field travels as the batch's values and
  # each row's length (the first batch has no value at all).
  monkeypatch.setattr(sources, "READ_BATCH", 3)
  rows = [{"q": f"q{i}", "answers": [f"a{i}.{j}" for j in range(i % 4 if i >= 3 else 0)],
           "n": i} for i in range(8)]
  p = _write(tmp_path / "qa.jsonl", [json.dumps(r) for r in rows])
  src = sources.JsonlDataSource({"train": p}, fields={"q": str, "answers": list, "n": int})
  ds = src.get_dataset("train", shuffle=False)
  assert ds.element_spec == {"q": tf.TensorSpec([], tf.string), "n": tf.TensorSpec([], tf.int64),
                             "answers": tf.TensorSpec([None], tf.string)}
  expected = [{"q": r["q"].encode(), "answers": [a.encode() for a in r["answers"]], "n": r["n"]}
              for r in rows]
  for _ in range(2):
    got = [{"q": ex["q"].numpy(), "answers": ex["answers"].numpy().tolist(), "n": ex["n"].numpy()}
           for ex in ds]
    assert got == expected


def test_arbitrary_sharding_covers_every_line_once(tmp_path):
  p = _write(tmp_path / "d.jsonl", [json.dumps({"t": str(i)}) for i in range(10)])
  src = sources.JsonlDataSource({"train": p}, fields={"t": str})
  seen = []
  for i in range(3):
    seen += [ex["t"] for ex in _read(src, shard_info=seqio.ShardInfo(index=i, num_shards=3))]
  assert sorted(seen) == sorted(str(i).encode() for i in range(10))


def test_malformed_json_names_file_and_line(tmp_path):
  p = _write(tmp_path / "bad.jsonl", [json.dumps({"t": "ok"}), '{"t": "unterminated'])
  src = sources.JsonlDataSource({"train": p}, fields={"t": str})
  with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
    list(sources.read_jsonl(p, {"t": str}))
  with pytest.raises(tf.errors.OpError, match=r"bad.jsonl:2: not valid JSON"):
    _read(src)


def test_missing_field_names_field_and_file(tmp_path):
  p = _write(tmp_path / "m.jsonl", [json.dumps({"en": "a"})])
  with pytest.raises(ValueError, match=r"m.jsonl:1: missing field 'de'"):
    list(sources.read_jsonl(p, {"en": str, "de": str}))


def test_wrong_type_is_refused(tmp_path):
  p = _write(tmp_path / "t.jsonl", [json.dumps({"answers": "not a list"})])
  with pytest.raises(ValueError, match=r"t.jsonl:1: field 'answers' must be a list"):
    list(sources.read_jsonl(p, {"answers": list}))


def test_non_utf8_is_an_error_or_replaced_on_request(tmp_path):
  p = _write(tmp_path / "latin1.jsonl", [b'{"t": "ok"}\n', b'{"t": "K\xf6ln"}\n'])
  with pytest.raises(ValueError, match=r"latin1.jsonl:2: not valid UTF-8 at byte 8"):
    list(sources.read_jsonl(p, {"t": str}))
  rows = list(sources.read_jsonl(p, {"t": str}, invalid_utf8="replace"))
  assert rows == [{"t": "ok"}, {"t": "K\ufffdln"}]  # no line lost


def test_missing_files_and_bad_config(tmp_path):
  src = sources.JsonlDataSource({"train": str(tmp_path / "nothing-*.jsonl")}, fields={"t": str})
  with pytest.raises(ValueError, match="no file matches"):
    src.list_shards("train")
  with pytest.raises(ValueError, match="unsupported field types"):
    sources.JsonlDataSource({"train": "x"}, fields={"t": dict})


@pytest.mark.parametrize("value,message", [
    ("3.7", r"n.jsonl:2: field 'n' must be a whole number, got 3.7"),
    ("1e30", r"n.jsonl:2: field 'n' is out of the int64 range"),
    (str(2**70), r"n.jsonl:2: field 'n' is out of the int64 range"),
    ("true", r"n.jsonl:2: field 'n' must be a number, got bool"),
])
def test_int_field_refuses_fractions_and_overflow_naming_file_and_line(tmp_path, value, message):
  p = _write(tmp_path / "n.jsonl", ['{"n": 3}', '{"n": %s}' % value])
  with pytest.raises(ValueError, match=message):
    list(sources.read_jsonl(p, {"n": int}))
  # Also through the TF dataset (the error reaches the reader with its text).
  src = sources.JsonlDataSource({"train": p}, fields={"n": int})
  with pytest.raises(tf.errors.OpError, match=message):
    _read(src)


def test_int_field_keeps_whole_numbers_and_int64_limits(tmp_path):
  p = _write(tmp_path / "n.jsonl", ['{"n": 3.0}', '{"n": %d}' % (2**63 - 1), '{"n": %d}' % -2**63])
  assert _read(sources.JsonlDataSource({"train": p}, fields={"n": int})) == [
      {"n": 3}, {"n": 2**63 - 1}, {"n": -2**63}]


def test_float_field_out_of_float32_range_names_file_and_line(tmp_path):
  p = _write(tmp_path / "f.jsonl", ['{"x": 0.5}', '{"x": 1e300}'])
  with pytest.raises(ValueError, match=r"f.jsonl:2: field 'x' is out of the float32 range"):
    list(sources.read_jsonl(p, {"x": float}))


def test_truncated_gzip_names_the_file(tmp_path):
  full = _write(tmp_path / "full.jsonl.gz", [json.dumps({"t": f"line {i}" * 20}) for i in range(500)],
                gz=True)
  data = open(full, "rb").read()
  cut = tmp_path / "cut.jsonl.gz"
  cut.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=r"cut.jsonl.gz: truncated or corrupt gzip file \(after line \d+"):
    list(sources.read_jsonl(str(cut), {"t": str}))
  with pytest.raises(ValueError, match=r"cut.jsonl.gz: truncated or corrupt gzip file"):
    sources.count_lines(str(cut))
  src = sources.JsonlDataSource({"train": str(cut)}, fields={"t": str})
  with pytest.raises(tf.errors.OpError, match=r"cut.jsonl.gz: truncated or corrupt gzip file"):
    _read(src)
  not_gzip = _write(tmp_path / "plain.jsonl.gz", ['{"t": "x"}'])  # named .gz, not gzipped
  with pytest.raises(ValueError, match=r"plain.jsonl.gz: truncated or corrupt gzip file"):
    list(sources.read_jsonl(not_gzip, {"t": str}))


@pytest.mark.parametrize("gz", [False, True])
def test_utf8_byte_order_mark_is_accepted(tmp_path, gz):
  p = _write(tmp_path / ("bom.jsonl" + (".gz" if gz else "")),
             [b'\xef\xbb\xbf{"t": "first"}\n', b'{"t": "second"}\n'], gz=gz)
  assert list(sources.read_jsonl(p, {"t": str})) == [{"t": "first"}, {"t": "second"}]
  assert sources.count_lines(p) == 2
  # Only at the start of the file: elsewhere U+FEFF is not whitespace JSON accepts.
  q = _write(tmp_path / "mid.jsonl", [b'{"t": "first"}\n', b'\xef\xbb\xbf{"t": "second"}\n'])
  with pytest.raises(ValueError, match=r"mid.jsonl:2: not valid JSON"):
    list(sources.read_jsonl(q, {"t": str}))
