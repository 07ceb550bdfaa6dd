"""Failure behaviour of the cache job and of loading: what users see when things go wrong."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

import cache_scripts
from cache_scripts import cache_tasks
from gemma_tasks import cache_metadata, cached

# Slow (`make test-slow`, run by CI): Beam runs of the caching job, killed and failed CLI runs.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIZ = "gemma_quiz_qa"
FLAKY = "gemma_test_cache_failing_quiz"
LENGTHS = {"inputs": 512, "targets": 512}


def _register_quiz_like(name, *, fail_after=None):
  """The real quiz QA task (real data, real preprocessors) under another name; with
  `fail_after`, its first preprocessor raises on the train split after that many examples."""
  import seqio
  import tensorflow as tf
  from gemma_tasks import builders, sources

  def failing(dataset):
    def check(i, ex):
      tf.debugging.assert_less(i, tf.constant(fail_after, tf.int64), message="simulated crash")
      return ex
    return dataset.enumerate().map(check)

  task = builders.add_qa_task(
      name, sources.embedded("quiz_qa", ("train", "validation"), fields={"question": str, "answers": list}))
  if fail_after is not None:
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=task.source, preprocessors=[failing, *task.preprocessors],
        output_features=task.output_features)
  return seqio.TaskRegistry.get(name)


def test_failed_run_leaves_no_completed_and_rerun_recovers(tmp_path, temp_task_names,
                                                          global_cache_dirs):
  import seqio
  temp_task_names.append(FLAKY)
  _register_quiz_like(FLAKY, fail_after=100)
  with pytest.raises(cache_tasks.CacheRunError, match="No COMPLETED was written.*run the same command again"):
    cache_tasks.cache_tasks([FLAKY], str(tmp_path), module_import=["gemma_tasks"], min_shards=2)
  task_dir = tmp_path / FLAKY
  assert not (task_dir / "COMPLETED").exists()
  assert not list(task_dir.glob("beam-temp-*")), "beam-temp leftovers after a failed run"
  # Loading that task from the cache is refused (no COMPLETED), naming the directory searched.
  seqio.TaskRegistry.remove(FLAKY)
  _register_quiz_like(FLAKY)
  with pytest.raises(cache_scripts.CacheNotFoundError, match=str(task_dir)):
    seqio.get_mixture_or_task(FLAKY).get_dataset(LENGTHS, "validation", use_cached=True)
  # Same command again, with the cause fixed: cleans up and writes the task, no manual deletion.
  (task_dir / "train.tfrecord-00000-of-00002").write_bytes(b"stale partial shard")
  report = cache_tasks.cache_tasks([FLAKY], str(tmp_path), module_import=["gemma_tasks"],
                                   min_shards=2, spot_check_examples=8)
  assert report.written == [FLAKY] and report.ok, report.summary()
  assert report.cleaned == [str(task_dir)]
  assert (task_dir / "COMPLETED").exists()
  assert report.validation[0].splits["train"].records == 960


def test_killed_cli_run_leaves_no_completed_and_rerun_recovers(tmp_path, global_cache_dirs):
  """SIGKILL in the middle of a real CLI run (worker processes and all), then the same command."""
  task_dir = tmp_path / QUIZ
  cmd = [sys.executable, "-m", "cache_scripts.cache_tasks", f"--tasks={QUIZ}",
         f"--output_cache_dir={tmp_path}", "--min_shards=2", "--spot_check_examples=8"]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True)
  deadline = time.time() + 240
  # Beam creates beam-temp-* in the task dir when the job starts writing; COMPLETED comes last.
  while time.time() < deadline and proc.poll() is None and not list(task_dir.glob("beam-temp-*")):
    time.sleep(0.05)
  started_writing = bool(list(task_dir.glob("beam-temp-*")))
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  if (task_dir / "COMPLETED").exists():
    pytest.skip("the run finished before it could be killed")
  assert started_writing, "the job never started writing"
  assert task_dir.exists()
  # The same job again (in this process, to save a TensorFlow start-up): cleans and completes.
  import seqio
  seqio.utils.set_global_cache_dirs([])  # only this test's directory counts
  seqio.get_mixture_or_task(QUIZ)._cache_dir = None
  report = cache_tasks.cache_tasks([QUIZ], str(tmp_path), min_shards=2, spot_check_examples=8)
  assert report.cleaned == [str(task_dir)] and report.written == [QUIZ]
  assert report.ok, report.summary()
  assert f"cleaned incomplete cache: {task_dir}" in report.summary()
  assert (task_dir / "COMPLETED").exists()
  assert not list(task_dir.glob("beam-temp-*"))


def test_missing_cache_error_names_task_and_dirs(tmp_path, global_cache_dirs):
  import seqio
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  seqio.utils.set_global_cache_dirs([a, b])
  task = seqio.get_mixture_or_task(QUIZ)
  task._cache_dir = None
  with pytest.raises(cache_scripts.CacheNotFoundError) as err:
    task.get_dataset(LENGTHS, "test", use_cached=True)
  message = str(err.value)
  assert f"'{QUIZ}'" in message
  assert os.path.join(a, QUIZ) in message and os.path.join(b, QUIZ) in message
  assert f"--tasks={QUIZ}" in message  # how to build it
  assert isinstance(err.value, AssertionError)  # seqio's own type, for existing callers
  # Also through seqio.get_dataset.
  with pytest.raises(cache_scripts.CacheNotFoundError, match=os.path.join(b, QUIZ)):
    seqio.get_dataset(QUIZ, LENGTHS, dataset_split="test", use_cached=True,
                      feature_converter=seqio.PassThroughFeatureConverter())


def test_importing_gemma_tasks_alone_turns_the_checks_on(tmp_path):
  """A user who imports only gemma_tasks (no cache_scripts) still gets the named error and the
  fingerprint-checking reader; a fresh interpreter, so no earlier import of this session counts."""
  code = textwrap.dedent(f"""
      import sys, seqio, gemma_tasks
      assert "cache_scripts" not in sys.modules
      seqio.add_global_cache_dirs([{str(tmp_path)!r}])
      try:
        seqio.get_mixture_or_task({QUIZ!r}).get_dataset(split="test", use_cached=True)
      except AssertionError as e:
        print(type(e).__name__, "|", e)
      """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.startswith("CacheNotFoundError |"), out.stdout
  assert os.path.join(str(tmp_path), QUIZ) in out.stdout


def test_empty_cache_dir_list_is_explained(global_cache_dirs):
  import seqio
  seqio.utils.set_global_cache_dirs([])
  task = seqio.get_mixture_or_task(QUIZ)
  task._cache_dir = None
  with pytest.raises(cache_scripts.CacheNotFoundError, match="add_global_cache_dirs was not called"):
    task.get_dataset(LENGTHS, "test", use_cached=True)


def test_no_matching_task_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="No registered task matches"):
    cache_tasks.cache_tasks(["gemma_no_such_task"], str(tmp_path))


def test_task_without_cache_placeholder_is_skipped_with_reason(tmp_path, temp_task_names):
  import seqio
  name = "gemma_test_cache_uncacheable"
  temp_task_names.append(name)
  quiz = seqio.get_mixture_or_task(QUIZ)
  seqio.TaskRegistry.add(name, source=quiz.source, preprocessors=quiz.preprocessors[:2],
                         output_features=quiz.output_features)
  report = cache_tasks.cache_tasks([name], str(tmp_path))
  assert report.written == [] and "CacheDatasetPlaceholder" in report.skipped[name]


def test_plain_seqio_cache_loads_with_a_warning(tmp_path, temp_task_names, global_cache_dirs,
                                               caplog):
  """A cache whose COMPLETED has no metadata (seqio's own script writes 'tfrecord' there)."""
  import seqio
  name = "gemma_test_cache_plain_seqio"
  temp_task_names.append(name)
  _register_quiz_like(name)
  report = cache_tasks.cache_tasks([name], str(tmp_path), min_shards=1, spot_check_examples=0)
  assert report.ok
  tf.io.gfile.GFile(str(tmp_path / name / "COMPLETED"), "w").write("tfrecord")
  seqio.add_global_cache_dirs([str(tmp_path)])
  with caplog.at_level("WARNING"):
    n = sum(1 for _ in seqio.get_mixture_or_task(name).get_dataset(
        LENGTHS, "validation", use_cached=True, shuffle=False))
  assert n == 108
  assert "no gemma-seqio fingerprint" in caplog.text
  assert cache_metadata.read_metadata(str(tmp_path / name)) is None


FAILING_MODULE = f'''
import seqio
import tensorflow as tf
import gemma_tasks
from gemma_tasks import builders, sources

def _failing(dataset):
  def check(i, ex):
    tf.debugging.assert_less(i, tf.constant(100, tf.int64), message="simulated crash")
    return ex
  return dataset.enumerate().map(check)

if "{FLAKY}" not in seqio.TaskRegistry.names():
  _task = builders.add_qa_task(
      "{FLAKY}", sources.embedded("quiz_qa", ("train", "validation"),
                                  fields={{"question": str, "answers": list}}))
  seqio.TaskRegistry.remove("{FLAKY}")
  seqio.TaskRegistry.add("{FLAKY}", source=_task.source,
                         preprocessors=[_failing, *_task.preprocessors],
                         output_features=_task.output_features)
'''


def test_failed_worker_process_leaves_no_completed_and_rerun_recovers(
    tmp_path, temp_task_names, global_cache_dirs, monkeypatch):
  """--workers=2: a Beam worker process fails -> no COMPLETED, no beam-temp leftovers, and the
  same task written again (here in one process) cleans up and completes."""
  module_dir = tmp_path / "modules"
  module_dir.mkdir()
  (module_dir / "gemma_cache_test_failing.py").write_text(FAILING_MODULE)
  monkeypatch.syspath_prepend(str(module_dir))  # the worker processes get our sys.path
  temp_task_names.append(FLAKY)
  out = tmp_path / "cache"
  with pytest.raises(cache_tasks.CacheRunError, match="No COMPLETED was written.*run the same command again"):
    cache_tasks.cache_tasks([FLAKY], str(out), module_import=["gemma_tasks",
                                                               "gemma_cache_test_failing"],
                            workers=2, min_shards=2)
  task_dir = out / FLAKY
  assert not (task_dir / "COMPLETED").exists()
  assert not list(task_dir.glob("beam-temp-*"))
  # Whether the failed run got as far as creating the task directory depends on how far the
  # other worker got before the crash; a leftover directory is cleaned, none is not an error.
  left_over = task_dir.exists()
  import seqio
  seqio.TaskRegistry.remove(FLAKY)
  _register_quiz_like(FLAKY)
  report = cache_tasks.cache_tasks([FLAKY], str(out), min_shards=2, spot_check_examples=8)
  assert report.written == [FLAKY] and report.ok, report.summary()
  assert report.cleaned == ([str(task_dir)] if left_over else [])


# ---- damaged caches: shards deleted, emptied, cut or corrupted; info files cut -----------------

@pytest.fixture(scope="module")
def quiz_cache(tmp_path_factory):
  """The real quiz task cached once (2 shards per split); tests damage copies of it."""
  import seqio
  old = list(seqio.utils.get_global_cache_dirs())
  out = tmp_path_factory.mktemp("quiz_cache")
  try:
    report = cache_tasks.cache_tasks([QUIZ], str(out), min_shards=2, spot_check_examples=8)
    assert report.ok, report.summary()
  finally:
    seqio.utils.set_global_cache_dirs(old)
    seqio.get_mixture_or_task(QUIZ)._cache_dir = None
  return out


@pytest.fixture
def quiz_copy(quiz_cache, tmp_path, global_cache_dirs):
  """A private copy of the quiz cache, the only cache dir seqio searches."""
  import shutil
  import seqio
  root = tmp_path / "cache"
  shutil.copytree(quiz_cache, root)
  seqio.utils.set_global_cache_dirs([str(root)])
  seqio.get_mixture_or_task(QUIZ)._cache_dir = None
  yield root
  seqio.get_mixture_or_task(QUIZ)._cache_dir = None


def _count_cached(split="train"):
  import seqio
  task = seqio.get_mixture_or_task(QUIZ)
  task._cache_dir = None
  return sum(1 for _ in task.get_dataset(LENGTHS, split, use_cached=True, shuffle=False))


def _damage(path, how):
  data = path.read_bytes()
  if how == "deleted":
    path.unlink()
  elif how == "emptied":
    path.write_bytes(b"")
  elif how == "cut":
    path.write_bytes(data[: len(data) // 2])


def _fix_command(root):
  return f"python -m cache_scripts.cache_tasks --tasks={QUIZ} --output_cache_dir={root} --overwrite"


@pytest.mark.parametrize("how", ["deleted", "emptied", "cut"])
def test_damaged_shard_is_refused_on_open(quiz_copy, how):
  assert _count_cached() == 960
  shard = quiz_copy / QUIZ / "train.tfrecord-00001-of-00002"
  _damage(shard, how)
  with pytest.raises(cached.CacheCorruptError) as err:
    _count_cached()
  message = str(err.value)
  said = {"deleted": "is missing", "emptied": "has 0 bytes", "cut": "bytes were written"}[how]
  assert str(shard) in message and said in message, message
  assert _fix_command(quiz_copy) in message
  assert _count_cached("validation") == 108  # the other splits still load


@pytest.mark.parametrize("how", ["deleted", "emptied", "cut"])
def test_validation_reports_a_damaged_shard(quiz_copy, how):
  import seqio
  from cache_scripts import validate
  _damage(quiz_copy / QUIZ / "train.tfrecord-00000-of-00002", how)
  report = validate.validate_cache(seqio.get_mixture_or_task(QUIZ), str(quiz_copy / QUIZ),
                                   spot_check_examples=0)
  assert not report.ok
  assert any("train.tfrecord-00000-of-00002" in e for e in report.errors), report.errors


def test_cache_tasks_rebuilds_a_damaged_cache_instead_of_skipping_it(quiz_copy):
  _damage(quiz_copy / QUIZ / "train.tfrecord-00001-of-00002", "emptied")
  report = cache_tasks.cache_tasks([QUIZ], str(quiz_copy), min_shards=2, spot_check_examples=8)
  assert QUIZ not in report.skipped, report.summary()
  assert report.written == [QUIZ] and report.ok, report.summary()
  assert f"rebuilt damaged cache: {quiz_copy / QUIZ}" in report.summary()
  assert "train.tfrecord-00001-of-00002" in report.summary()
  assert report.validation[0].splits["train"].records == 960
  assert _count_cached() == 960


def test_truncated_info_file_names_the_file_and_the_fix(quiz_copy):
  info = quiz_copy / QUIZ / "info.train.json"
  info.write_bytes(info.read_bytes()[:100])
  with pytest.raises(cached.CacheCorruptError) as err:
    _count_cached()
  message = str(err.value)
  assert f"{info}: not valid JSON" in message and _fix_command(quiz_copy) in message


def test_output_cache_dir_under_a_file_is_a_clear_error(tmp_path):
  blocker = tmp_path / "not_a_dir"
  blocker.write_text("x")
  with pytest.raises(ValueError, match=rf"--output_cache_dir {blocker}/cache: {blocker} is a "
                                       r"file, not a directory"):
    cache_tasks.cache_tasks([QUIZ], str(blocker / "cache"))
  out = subprocess.run([sys.executable, "-m", "cache_scripts.cache_tasks", f"--tasks={QUIZ}",
                        f"--output_cache_dir={blocker}/cache"], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 1
  assert f"ERROR: --output_cache_dir {blocker}/cache: {blocker} is a file" in out.stderr
  assert "Traceback" not in out.stderr, out.stderr[-3000:]


# ---- a record corrupted in the middle of a shard (same size: only reading finds it) ------------

def _flip_a_byte_in_second_record(path):
  """Flips one byte in the data of the shard's 2nd TFRecord (framing: u64 length, u32 CRC,
  data, u32 CRC), so the file keeps its size and the damage is met within the first reads."""
  import struct
  data = bytearray(path.read_bytes())
  (first,) = struct.unpack("<Q", data[:8])
  second = 8 + 4 + first + 4
  (length,) = struct.unpack("<Q", data[second: second + 8])
  data[second + 12 + length // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _assert_names_shard_and_fix(message, shard, root):
  assert str(shard) in message, message
  assert _fix_command(root) in message, message


def test_corrupt_record_in_a_shard_names_the_shard_when_training(quiz_copy, tmp_path):
  shard = quiz_copy / QUIZ / "train.tfrecord-00001-of-00002"
  _flip_a_byte_in_second_record(shard)
  run = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "model.runner.train", "--task", QUIZ, "--model_dir", str(run),
       "--preset", "tiny_gemma1", "--inputs_length", "32", "--targets_length", "16",
       "--batch_size", "4", "--shuffle_buffer_size", "256", "--train_steps", "2",
       "--no_progress", "--use_cached", "--cache_dirs", str(quiz_copy)],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "[train] ERROR:" in proc.stderr and "corrupt" in proc.stderr, proc.stderr
  _assert_names_shard_and_fix(proc.stderr, shard, quiz_copy)
  assert "Traceback" not in proc.stderr, proc.stderr


def test_corrupt_record_in_a_shard_names_the_shard_when_evaluating(quiz_copy, tmp_path):
  from model.runner import evaluate, train
  run = tmp_path / "run"
  train.train(train.TrainArgs(task=QUIZ, model_dir=str(run), preset="tiny_gemma1",
                              inputs_length=32, targets_length=16, batch_size=4, train_steps=1,
                              warmup_steps=1, shuffle_buffer_size=64, progress=False))
  shard = quiz_copy / QUIZ / "validation.tfrecord-00000-of-00002"
  _flip_a_byte_in_second_record(shard)
  with pytest.raises(cached.CacheCorruptError) as err:
    evaluate.evaluate(evaluate.EvalArgs(checkpoint_dir=str(run), task=QUIZ, split="validation",
                                        use_cached=True, num_examples=4, max_decode_length=2,
                                        progress=False))
  _assert_names_shard_and_fix(str(err.value), shard, quiz_copy)


def test_validation_names_a_corrupt_record_and_the_fix(quiz_copy):
  import seqio
  from cache_scripts import validate
  shard = quiz_copy / QUIZ / "train.tfrecord-00000-of-00002"
  _flip_a_byte_in_second_record(shard)
  report = validate.validate_cache(seqio.get_mixture_or_task(QUIZ), str(quiz_copy / QUIZ),
                                   spot_check_examples=0)
  assert not report.ok
  _assert_names_shard_and_fix(report.summary(), shard, quiz_copy)
