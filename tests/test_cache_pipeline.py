"""The cache job end to end on real embedded data: write, validate, load with use_cached=True.

Two real tasks are cached once per module: the registered `gemma_quiz_qa` (all four splits,
2,160 examples) and `LIMITED` = the registered LibreOffice translation task built by the same builder
on the real LibreOffice data, limited to its validation and test splits (3,053 examples) so the
suite stays fast. They run with `workers=2` (Beam's own multi_processing mode: two SDK worker
processes); the limited task is registered by a module written to a temp dir and put on
PYTHONPATH, which is how the worker processes find it (the same `--module_import` route users
take).
"""
import collections
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gemma_tasks  # noqa: F401  (registers gemma_quiz_qa for tests run on their own)
from cache_scripts import cache_tasks
from gemma_tasks import cache_metadata
from gemma_tasks.cached import CheckedCacheTask

# Slow (`make test-slow`, run by CI): Beam runs of the caching job.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIZ = "gemma_quiz_qa"
LIMITED = "gemma_test_cache_en_de_libreoffice_limited"
LENGTHS = {"inputs": 2048, "targets": 2048}  # longer than any example: nothing is trimmed
LIMITED_MODULE = f'''
import seqio
import gemma_tasks
from gemma_tasks import builders, preprocessors, sources

if "{LIMITED}" not in seqio.TaskRegistry.names():
  builders.add_translation_task(
      "{LIMITED}",
      sources.embedded("libreoffice_en_de", ("validation", "test"), fields={{"en": str, "de": str}}),
      source_key="en", target_key="de", prefix=preprocessors.TRANSLATE_PREFIX)
'''


def _key(ex):
  h = hashlib.sha256()
  for k in sorted(ex):
    v = np.asarray(ex[k])
    data = b"\0".join(v.reshape(-1).tolist()) if v.dtype == object else v.tobytes()
    h.update(f"{k}|{v.dtype if v.dtype != object else 'bytes'}|{v.shape}|".encode() + data)
  return h.hexdigest()


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
  import seqio
  module_dir = tmp_path_factory.mktemp("modules")
  (module_dir / "gemma_cache_test_tasks.py").write_text(LIMITED_MODULE)
  sys.path.insert(0, str(module_dir))
  old_pythonpath = os.environ.get("PYTHONPATH")
  os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(module_dir), REPO, old_pythonpath) if p)
  old_dirs = list(seqio.utils.get_global_cache_dirs())
  out = tmp_path_factory.mktemp("cache")
  try:
    report = cache_tasks.cache_tasks(
        [QUIZ, LIMITED], str(out), module_import=["gemma_tasks", "gemma_cache_test_tasks"],
        workers=2, min_shards=4)
    yield {"dir": str(out), "report": report}
  finally:
    seqio.TaskRegistry.remove(LIMITED)
    seqio.utils.set_global_cache_dirs(old_dirs)
    sys.path.remove(str(module_dir))
    if old_pythonpath is None:
      os.environ.pop("PYTHONPATH", None)
    else:
      os.environ["PYTHONPATH"] = old_pythonpath


def test_run_writes_and_validates_both_tasks(cached):
  report = cached["report"]
  assert sorted(report.written) == sorted([QUIZ, LIMITED])
  assert report.ok, report.summary()
  # --workers=2: Beam's multi_processing mode with two worker processes.
  assert report.processes == 2
  assert "--direct_num_workers=2" in report.pipeline_options
  assert "--direct_running_mode=multi_processing" in report.pipeline_options
  for task in (QUIZ, LIMITED):
    task_dir = os.path.join(cached["dir"], task)
    assert not [f for f in os.listdir(task_dir) if f.startswith("beam-temp-")]
  by_task = {r.task: r for r in report.validation}
  quiz, limited = by_task[QUIZ], by_task[LIMITED]
  assert list(quiz.splits) == ["train", "validation", "test", "reworded"]
  assert list(limited.splits) == ["validation", "test"]
  # Examples = source lines (no line of these files is dropped by the preprocessors' filters).
  sizes = json.load(open(os.path.join(REPO, "gemma_tasks", "data", "split_sizes.json")))
  for split, r in quiz.splits.items():
    assert r.examples == r.records == sizes[f"quiz_qa.{split}"]
    assert r.tokens["inputs"] > r.examples and r.tokens["targets"] > r.examples
    assert r.spot_checked == r.spot_check_total == 64
    assert r.num_shards == 4
  for split, r in limited.splits.items():
    assert r.examples == r.records == sizes[f"libreoffice_en_de.{split}"]
  meta = cache_metadata.read_metadata(os.path.join(cached["dir"], QUIZ))
  assert meta["output_format"] == "tfrecord"
  assert set(meta["tasks"]) == {QUIZ}
  assert "Caching" not in report.summary() and "validation: OK" in report.summary()


@pytest.mark.parametrize("task_name", [QUIZ, LIMITED])
def test_every_cached_example_equals_on_the_fly(cached, task_name):
  import seqio
  seqio.add_global_cache_dirs([cached["dir"]])
  task = seqio.get_mixture_or_task(task_name)
  for split in task.splits:
    fly = [_key(ex) for ex in task.get_dataset(
        LENGTHS, split, use_cached=False, shuffle=False).as_numpy_iterator()]
    from_cache = [_key(ex) for ex in task.get_dataset(
        LENGTHS, split, use_cached=True, shuffle=False).as_numpy_iterator()]
    assert len(from_cache) == len(fly) == task.get_cached_stats(split)["examples"]
    # The cache is globally shuffled by the job: same examples, another order.
    assert collections.Counter(from_cache) == collections.Counter(fly)


def test_our_reader_gives_what_seqio_reader_gives(cached):
  """Same examples in the same order, dtypes and shapes as seqio's own `_CachedDataSource`."""
  import seqio
  seqio.add_global_cache_dirs([cached["dir"]])
  task = seqio.get_mixture_or_task(QUIZ)
  ours = list(task.get_dataset(LENGTHS, "train", use_cached=True, shuffle=False).as_numpy_iterator())
  # The same task as a plain seqio.Task (same name, so the same cache): seqio's own reader.
  plain = seqio.Task(QUIZ, source=task.source, output_features=task.output_features,
                     preprocessors=task.preprocessors)
  assert not isinstance(plain, CheckedCacheTask)
  theirs_ds = plain.get_dataset(LENGTHS, "train", use_cached=True, shuffle=False)
  theirs = list(theirs_ds.as_numpy_iterator())
  assert [_key(e) for e in ours] == [_key(e) for e in theirs]
  ours_spec = task.get_dataset(LENGTHS, "train", use_cached=True, shuffle=False).element_spec
  assert ours_spec == theirs_ds.element_spec


def test_load_packed_with_gemma_converter(cached):
  """seqio.get_dataset + the Gemma PrefixLM converter, packed: same segments as on the fly."""
  fc = pytest.importorskip("feature_converters")
  import seqio
  seqio.add_global_cache_dirs([cached["dir"]])
  lengths = {"inputs": 96, "targets": 32}

  def segments(use_cached):
    ds = seqio.get_dataset(
        LIMITED, lengths, dataset_split="validation", shuffle=False, use_cached=use_cached,
        feature_converter=fc.GemmaPrefixLMFeatureConverter(pack=True))
    # No batch_size: seqio batches with drop_remainder=True, which would drop order-dependent rows.
    out, rows = collections.Counter(), 0
    for row in ds.as_numpy_iterator():
      rows += 1
      tokens, seg = row["decoder_target_tokens"], row["decoder_segment_ids"]
      for s in set(seg.tolist()) - {0}:
        out[tokens[seg == s].tobytes()] += 1
    return out, rows

  from_cache, rows = segments(True)
  fly, _ = segments(False)
  assert rows > 0 and sum(from_cache.values()) == 1374  # every validation example, packed
  assert from_cache == fly


@pytest.mark.parametrize("workers", [1, 2])
def test_arrayrecord_output_is_written_and_loads(tmp_path, workers):
  import seqio
  task = seqio.get_mixture_or_task(QUIZ)
  old = list(seqio.utils.get_global_cache_dirs())
  # Only this test's directory: the module's tfrecord cache of QUIZ must not be found.
  seqio.utils.set_global_cache_dirs([])
  task._cache_dir = None
  try:
    report = cache_tasks.cache_tasks([QUIZ], str(tmp_path), output_format="arrayrecord",
                                     min_shards=2, spot_check_examples=16, workers=workers)
    assert report.processes == workers
    assert report.ok and report.written == [QUIZ], report.summary()
    task_dir = tmp_path / QUIZ
    assert cache_metadata.read_metadata(str(task_dir))["output_format"] == "arrayrecord"
    # Default --min_source_shards = 2 x workers line shards, above --min_shards=2.
    n = 2 * workers
    assert sorted(p.name for p in task_dir.glob("test.*record*")) == [
        f"test.array_record-{i:05d}-of-{n:05d}" for i in range(n)]
    task._cache_dir = None
    from_cache = collections.Counter(_key(e) for e in task.get_dataset(
        LENGTHS, "test", use_cached=True, shuffle=False).as_numpy_iterator())
  finally:
    seqio.utils.set_global_cache_dirs(old)
    task._cache_dir = None
  fly = collections.Counter(_key(e) for e in task.get_dataset(
      LENGTHS, "test", use_cached=False, shuffle=False).as_numpy_iterator())
  assert from_cache == fly and sum(fly.values()) == 132


def test_unsupported_output_format_is_refused(tmp_path, capsys):
  from gemma_seqio import flags
  with pytest.raises(ValueError, match="tfrecord.*arrayrecord.*parquet"):
    cache_tasks.cache_tasks([QUIZ], str(tmp_path), output_format="parquet")
  with pytest.raises(SystemExit):
    flags.parse(cache_tasks.CacheSettings, ["--output_format", "parquet"])
  assert "arrayrecord" in capsys.readouterr().err
  assert not (tmp_path / QUIZ).exists()


def test_flags_are_the_settings_fields():
  """seqio's flag names, comma-separated lists as seqio's absl list flags took them."""
  from gemma_seqio import flags
  s = flags.parse(cache_tasks.CacheSettings, [
      "--tasks=gemma_quiz_qa,gemma_en_.*", "--excluded_tasks", "x", "--output_cache_dir=/c",
      "--module_import=gemma_tasks,my.tasks", "--pipeline_options=--runner=DirectRunner,--a=b",
      "--min_shards=2", "--max_shards", "8", "--overwrite", "--workers=2", "--no_validate"])
  assert s == cache_tasks.CacheSettings(
      tasks=("gemma_quiz_qa", "gemma_en_.*"), excluded_tasks=("x",), output_cache_dir="/c",
      module_import=("gemma_tasks", "my.tasks"), pipeline_options=("--runner=DirectRunner", "--a=b"),
      min_shards=2, max_shards=8, overwrite=True, workers=2, validate=False)
  assert flags.parse(cache_tasks.CacheSettings, flags.to_argv(s)) == s
  # Python callers may pass lists; the settings hold tuples.
  assert cache_tasks.CacheSettings(tasks=["a"], module_import=["m"]).module_import == ("m",)


def test_the_job_swaps_no_seqio_attribute(cached):
  """The graph is composed from seqio's pieces: seqio's own functions stay in place."""
  import seqio
  from seqio import beam_utils
  from cache_scripts import pipeline
  assert seqio.dict_to_tfexample.__module__.startswith("seqio")
  assert beam_utils.PreprocessTask.__module__ == "seqio.beam_utils"
  assert issubclass(pipeline.ShardedPreprocessTask, beam_utils.PreprocessTask)


def test_completed_task_is_skipped_without_overwrite(cached):
  completed = os.path.join(cached["dir"], QUIZ, "COMPLETED")
  before = os.stat(completed).st_mtime_ns
  report = cache_tasks.cache_tasks([QUIZ], cached["dir"])
  assert report.written == [] and report.validation == []
  assert "already cached" in report.skipped[QUIZ] and "--overwrite" in report.skipped[QUIZ]
  assert os.stat(completed).st_mtime_ns == before
  # The CLI says so too, and exits 0.
  proc = subprocess.run(
      [sys.executable, "-m", "cache_scripts.cache_tasks", f"--tasks={QUIZ}",
       f"--output_cache_dir={cached['dir']}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"skipped {QUIZ}: already cached at" in proc.stdout
  assert os.stat(completed).st_mtime_ns == before


def test_fast_tfexample_writes_the_same_bytes_as_seqio():
  """The job's `dict_to_tfexample` must be byte-for-byte seqio's, on real examples of every task."""
  import gemma_tasks  # noqa: F401
  import seqio
  import tensorflow as tf
  from cache_scripts import tfexample
  examples = []
  for name in ("gemma_quiz_qa", "gemma_en_de_libreoffice", "gemma_lm_python_docs",
               "gemma_trivia_qa_open"):
    task = seqio.get_mixture_or_task(name)
    examples += list(task.preprocess_precache(
        task.source.get_dataset("validation", shuffle=False)).take(100))
  examples.append({"i": tf.constant(3), "f": tf.constant(1.5), "b": tf.constant([True, False]),
                   "m": np.zeros((2, 3), np.float32), "s": "text", "v": np.array(["x", "yy"]),
                   "e": np.array([], np.int32), "p": 7, "q": 0.1, "nul": b"a\0"})
  for ex in examples:
    assert tfexample.dict_to_tfexample(ex).SerializeToString() == \
        seqio.dict_to_tfexample(ex).SerializeToString()
  ragged = {"r": tf.ragged.constant([[1, 2], [3]])}
  assert tfexample.dict_to_tfexample(ragged) == seqio.dict_to_tfexample(ragged)


def test_cache_has_seqio_files_and_stats(cached):
  """What seqio's pipeline writes: shard names from info.num_shards, stats that add up
  (examples, tokens) or take the maximum (max_tokens), COMPLETED with metadata."""
  import seqio
  task_dir = os.path.join(cached["dir"], QUIZ)
  for split in ("train", "validation", "test"):
    info = json.load(open(seqio.get_cached_info_path(task_dir, split)))
    n = info["num_shards"]
    prefix = os.path.basename(seqio.get_cached_tfrecord_prefix(task_dir, split))
    assert sorted(f for f in os.listdir(task_dir) if f.startswith(prefix)) == [
        f"{prefix}-{i:05d}-of-{n:05d}" for i in range(n)]
    stats = json.load(open(seqio.get_cached_stats_path(task_dir, split)))
    task = seqio.get_mixture_or_task(QUIZ)
    # What seqio's GetStats counts: the examples before the cache placeholder, tokens other
    # than EOS and padding.
    examples = list(task.preprocess_precache(task.source.get_dataset(
        split, shuffle=False)).as_numpy_iterator())
    assert stats["examples"] == len(examples)
    for feature in ("inputs", "targets"):
      vocab = task.output_features[feature].vocabulary
      counts = [int(np.sum((ex[feature] != vocab.eos_id) & (ex[feature] != vocab.pad_id)))
                for ex in examples]
      assert stats[f"{feature}_tokens"] == sum(counts)
      assert stats[f"{feature}_max_tokens"] == max(counts)
  assert cache_metadata.read_metadata(task_dir)["tasks"][QUIZ]["fingerprint"]


def test_batched_emission_gives_seqio_preprocess_task_examples(temp_task_names):
  """Our PreprocessTask reads a shard in batches; seqio's reads it one example at a time. Same
  examples, same seeds (a random preprocessor), same provenance, ragged features included."""
  import seqio  # noqa: PLC0415
  from seqio import beam_utils  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415

  from cache_scripts.pipeline import ShardedPreprocessTask  # noqa: PLC0415

  name = "emission_with_random_steps"
  temp_task_names.append(name)
  quiz = seqio.get_mixture_or_task("gemma_quiz_qa")

  @seqio.map_over_dataset(num_seeds=1)
  def random_tag(ex, seed):
    return {**ex, "tag": tf.random.stateless_uniform([], seed, maxval=1000, dtype=tf.int32)}

  seqio.TaskRegistry.add(name, source=quiz.source,
                         preprocessors=[*quiz.preprocessors[:2], random_tag,
                                        seqio.CacheDatasetPlaceholder()],
                         output_features=quiz.output_features, metric_fns=[])
  for add_provenance in (False, True):
    ours = ShardedPreprocessTask(seqio.get_mixture_or_task(name), "train",
                                 preprocessors_seed=7, add_provenance=add_provenance)
    theirs = beam_utils.PreprocessTask(seqio.get_mixture_or_task(name), "train",
                                       preprocessors_seed=7, add_provenance=add_provenance)
    shard = theirs.shards[0]
    got, want = list(ours._emit_examples(shard)), list(theirs._emit_examples(shard))
    assert len(got) == len(want) == 960
    assert len({int(ex["tag"]) for ex in got}) > 100  # the seed reached the preprocessor
    for a, b in zip(got, want):
      assert a.keys() == b.keys()
      for k in a:
        expected = b[k].numpy() if isinstance(b[k], tf.Tensor) else b[k]
        np.testing.assert_array_equal(a[k], expected, err_msg=k)
        assert type(a[k]) is type(expected) or np.asarray(a[k]).dtype == expected.dtype, k
