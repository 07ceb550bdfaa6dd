"""What a user sees from our CLIs: our progress and results; library chatter in a log file.

Each CLI runs as a real subprocess (as from a shell), so C++ logs, Beam workers and start-up
lines are all there to be caught.
"""
import json
import os
import subprocess
import sys

import pytest

# Slow (`make test-slow`, run by CI): every test runs a CLI in a fresh interpreter.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines a newcomer used to get between ours (TF/absl start-up, SentencePiece inside
# tensorflow_text, Beam, apitools, orbax).
NOISE = ("oneDNN", "absl::InitializeLog", "cuda drivers", "precompiled_charsmap",
         "Using yield and return", "apitools", "orbax", "_CHECKPOINT_METADATA")
# The environment of a newcomer's shell: no TF_CPP_MIN_LOG_LEVEL of the test run.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _run(args, timeout=600):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=ENV)


def _assert_quiet(proc):
  terminal = proc.stdout + proc.stderr
  noisy = [n for n in NOISE if n in terminal]
  assert not noisy, f"library lines on the terminal ({noisy}):\n{terminal}"


def test_train_shows_our_lines_and_logs_the_rest(tmp_path):
  run = tmp_path / "run"
  proc = _run(["-m", "model.runner.train", "--task", "gemma_quiz_qa", "--model_dir", str(run),
               "--preset", "tiny_gemma1", "--inputs_length", "32", "--targets_length", "16",
               "--batch_size", "4", "--shuffle_buffer_size", "64", "--train_steps", "2",
               "--warmup_steps", "1", "--log_every", "1", "--no_progress"])
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "[train] step 2: loss" in proc.stdout and "[train] step 2/2 saved in" in proc.stdout
  _assert_quiet(proc)
  log = (run / "train.log").read_text()
  assert "precompiled_charsmap" in log and "oneDNN" in log, log[-2000:]
  proc = _run(["-m", "model.runner.evaluate", "--checkpoint_dir", str(run), "--task", "gemma_quiz_qa",
               "--split", "validation", "--num_examples", "2", "--max_decode_length", "2",
               "--no_progress"])
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "gemma_quiz_qa (validation, step 2, 2 examples" in proc.stdout, proc.stdout
  assert "[evaluate] results in" in proc.stdout
  _assert_quiet(proc)
  log = (run / "eval_validation" / "evaluate.log").read_text()
  assert "precompiled_charsmap" in log and "oneDNN" in log, log[-2000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_cache_tasks_shows_our_lines_and_logs_the_rest(tmp_path, workers):
  """With --workers=2 the progress lines come from Beam's worker processes."""
  out = tmp_path / "cache"
  proc = _run(["-m", "cache_scripts.cache_tasks", "--tasks=gemma_quiz_qa",
               f"--output_cache_dir={out}", "--min_shards=2", "--spot_check_examples=8",
               f"--workers={workers}"])
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "gemma_quiz_qa  train: 960 examples" in proc.stdout, proc.stdout
  shards = 2 * workers  # --min_source_shards defaults to 2 x workers
  assert f"gemma_quiz_qa/train shard {shards}/{shards}: done" in proc.stderr, proc.stderr
  _assert_quiet(proc)
  log = (out / "cache_tasks.log").read_text()
  # Beam's import notes and SentencePiece's C++ lines (of every worker process) are in the file.
  assert "apitools not found" in log and "precompiled_charsmap" in log, log[-2000:]


def test_gemma_tasks_cli_is_quiet_and_keeps_no_log_on_success():
  proc = _run(["-m", "gemma_tasks", "show", "gemma_quiz_qa", "-n", "1"], timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "formatted  inputs:" in proc.stdout
  _assert_quiet(proc)
  assert "the full log" not in proc.stderr


def test_a_failed_run_says_where_its_log_is_and_creates_nothing(tmp_path):
  run = tmp_path / "run"
  proc = _run(["-m", "model.runner.train", "--task", "gemma_quiz_qa", "--model_dir", str(run),
               "--preset", "no_such_preset", "--train_steps", "2"])
  assert proc.returncode == 2
  assert "[train] ERROR:" in proc.stderr and "no_such_preset" in proc.stderr, proc.stderr
  _assert_quiet(proc)
  assert not run.exists()   # refused before anything is created, the log included
  said = [l for l in proc.stderr.splitlines() if "the full log" in l]
  assert said, proc.stderr
  path = said[0].rsplit(" is ", 1)[1].strip()
  assert os.path.isfile(path) and "no_such_preset" not in path
  os.remove(path)


def test_crash_traceback_reaches_the_terminal_with_the_log_path(tmp_path):
  code = ("from gemma_seqio import cli_log; import os, logging\n"
          f"with cli_log.to_log_file({str(tmp_path)!r}, 'tool'):\n"
          "  os.write(2, b'a C++ line\\n')\n"
          "  logging.getLogger('some_library').warning('library warning')\n"
          "  raise RuntimeError('boom')\n")
  proc = _run(["-c", code])
  assert proc.returncode == 1
  assert "RuntimeError: boom" in proc.stderr
  assert f"the full log (library messages included) is {tmp_path / 'tool.log'}" in proc.stderr
  assert "a C++ line" not in proc.stderr and "library warning" not in proc.stderr
  log = (tmp_path / "tool.log").read_text()
  assert "a C++ line" in log and "library warning" in log


def test_our_warnings_reach_the_terminal(tmp_path):
  """A warning logged by one of our modules (absl or standard logging) is shown and logged."""
  code = ("from gemma_seqio import cli_log; import logging\n"
          "from absl import logging as absl_logging\n"
          "import model.runner.inputs\n"
          f"with cli_log.to_log_file({str(tmp_path)!r}, 'tool'):\n"
          "  exec(compile('import logging; logging.getLogger(\"x\").warning(\"ours, std\")',"
          " model.runner.inputs.__file__, 'exec'))\n"
          "  exec(compile('from absl import logging; logging.warning(\"ours, absl\")',"
          " model.runner.inputs.__file__, 'exec'))\n")
  proc = _run(["-c", code])
  assert proc.returncode == 0, proc.stderr
  assert "WARNING: ours, std" in proc.stderr and "WARNING: ours, absl" in proc.stderr
  log = (tmp_path / "tool.log").read_text()
  assert "ours, std" in log and "ours, absl" in log


@pytest.mark.parametrize("module", ["model.runner.train", "model.runner.evaluate", "demo.run"])
def test_help_does_not_load_tensorflow(module):
  code = (f"import sys, {module} as m\n"
          "try:\n  m.main(['--help'])\nexcept SystemExit:\n  pass\n"
          "print('TF LOADED' if 'tensorflow' in sys.modules else 'NO TF')\n")
  proc = _run(["-c", code], timeout=120)
  assert proc.stdout.strip().endswith("NO TF"), proc.stdout + proc.stderr


def test_demo_shows_our_lines_and_logs_the_rest(tmp_path):
  """`make demo`'s driver, at its smallest (on the fly, 2 steps, 2 examples per task)."""
  out = tmp_path / "demo"
  proc = _run(["-m", "demo.run", "--out", str(out), "--no_cache", "--train_steps", "2",
               "--translation_eval_examples", "2", "--qa_eval_examples", "2",
               "--max_decode_length", "2", "--budget_minutes", "2", "--no_progress"])
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "=== results ===" in proc.stdout and "[train] step 2/2 saved" in proc.stdout
  assert "training on gemma_en_de_libreoffice_gettext_quiz:" in proc.stdout
  # The quiz is scored on two splits, also per table (the first two questions of each are
  # African capitals).
  rows = json.loads((out / "results.json").read_text())["rows"]
  assert [(r["task"], r["split"]) for r in rows if "group" not in r] == [
      ("gemma_en_de_libreoffice", "test"), ("gemma_quiz_qa", "reworded"), ("gemma_quiz_qa", "test"),
      ("gemma_trivia_qa_open", "test")]
  assert [(r["task"], r["split"], r["examples"]) for r in rows if "group" in r] == [
      ("  gemma_quiz_qa: africa", "reworded", 2), ("  gemma_quiz_qa: africa", "test", 2)]
  assert "gemma_quiz_qa: africa" in proc.stdout
  _assert_quiet(proc)
  log = (out / "demo.log").read_text()
  assert "precompiled_charsmap" in log and "oneDNN" in log, log[-2000:]


def test_cache_tasks_without_output_dir_is_a_one_line_error():
  proc = _run(["-m", "cache_scripts.cache_tasks", "--tasks=gemma_quiz_qa"], timeout=300)
  assert proc.returncode == 1
  assert "ERROR: --output_cache_dir is required" in proc.stderr, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  _assert_quiet(proc)


def test_demo_refuses_an_unknown_mixture_before_any_work(tmp_path):
  out = tmp_path / "demo"
  proc = _run(["-m", "demo.run", "--out", str(out), "--mixture", "gemma_en_de_nope",
               "--no_progress"])
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert ("--mixture 'gemma_en_de_nope' is not a registered task or mixture" in proc.stderr
          and "gemma_en_de_libreoffice_gettext_quiz_facts_x3" in proc.stderr), proc.stderr
  assert not (out / "cache").exists() and not (out / "model").exists()
