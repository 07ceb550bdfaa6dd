"""model.runner.train / model.runner.evaluate under bad input and faults: clear errors up front, nothing lost.

Bad flags are refused before anything is written; damaged or incomplete checkpoints are refused
or skipped by name; a run resumed or evaluated with another vocabulary is refused; ignored flags
are not recorded as if they had been used; SIGINT/SIGTERM save and exit cleanly.
"""
import gzip
import json
import os
import signal
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(task="gemma_quiz_qa", preset="tiny_gemma1", inputs_length=32, targets_length=16,
            batch_size=4, learning_rate=3e-3, warmup_steps=2, log_every=1, progress=False,
            shuffle_buffer_size=256, packing="best_fit")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _args(model_dir, **kw):
  from model.runner import train
  return train.TrainArgs(model_dir=str(model_dir), **{**TINY, **kw})


def _cli(model_dir, *extra):
  return [sys.executable, "-m", "model.runner.train", "--task", "gemma_quiz_qa", "--model_dir",
          str(model_dir), "--preset", "tiny_gemma1", "--inputs_length", "32",
          "--targets_length", "16", "--batch_size", "4", "--shuffle_buffer_size", "256",
          "--no_progress", *extra]


def _write_jsonl(path, rows):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


# -- bad flags: refused before anything is created -------------------------------------------

@pytest.mark.parametrize("changes, message", [
    (dict(learning_rate=-1.0), r"--learning_rate must be > 0, got -1.0"),
    (dict(learning_rate=0.0), r"--learning_rate must be > 0, got 0.0"),
    (dict(learning_rate=float("nan")), r"--learning_rate must be > 0, got nan"),
    (dict(warmup_steps=-5), r"--warmup_steps must be >= 0, got -5"),
    (dict(clip_norm=0.0), r"--clip_norm must be > 0, got 0.0"),
    (dict(clip_norm=-1.0), r"--clip_norm must be > 0, got -1.0"),
    (dict(label_smoothing=1.0), r"--label_smoothing must be in \[0, 1\), got 1.0"),
    (dict(inputs_length=0, targets_length=0), r"--inputs_length \+ --targets_length must be"),
    (dict(targets_length=0), r"--targets_length must be >= 1, got 0"),
    (dict(save_every=0), r"--save_every must be >= 1, got 0"),
    (dict(log_every=0), r"--log_every must be >= 1, got 0"),
    (dict(keep=0), r"--keep must be >= 1, got 0"),
    (dict(preset="tiny_gemmaa"), r"tiny_gemmaa"),
    (dict(task="gemma_quiz_qaa"), r"No Task or Mixture named 'gemma_quiz_qaa'"),
])
def test_bad_flags_are_refused_before_anything_is_created(tmp_path, changes, message):
  from model.runner import train
  run = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    train.train(_args(run, train_steps=2, **changes))
  assert not run.exists()


def test_cli_error_leaves_no_dir_and_no_orbax_traceback(tmp_path):
  run = tmp_path / "run"
  proc = subprocess.run(_cli(run, "--train_steps", "2", "--preset", "no_such_preset"),
                        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "[train] ERROR" in proc.stderr and "no_such_preset" in proc.stderr
  assert "Traceback" not in proc.stderr and "cannot schedule new futures" not in proc.stderr
  assert not run.exists()


def test_model_dir_that_is_a_file(tmp_path):
  from model.runner import train
  (tmp_path / "afile").write_text("x")
  with pytest.raises(ValueError, match=r"--model_dir .*afile is a file, not a directory"):
    train.train(_args(tmp_path / "afile", train_steps=1))
  assert (tmp_path / "afile").read_text() == "x"


def test_task_without_examples_names_task_and_split(tmp_path, temp_task_names):
  from gemma_tasks import builders, sources
  from model.runner import train
  empty = _write_jsonl(tmp_path / "empty.jsonl.gz", [])
  builders.add_qa_task("toy_empty_qa", sources.JsonlDataSource(
      {"train": empty}, fields={"question": str, "answers": list}))
  temp_task_names.append("toy_empty_qa")
  with pytest.raises(ValueError, match=r"'toy_empty_qa' has no examples in its 'train' split"):
    train.train(_args(tmp_path / "run", task="toy_empty_qa", train_steps=2))


# -- damaged and incomplete checkpoints --------------------------------------------------------

@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
  """A tiny run of 6 steps stopped after 4, with checkpoints at 2 and 4."""
  from model.runner import train
  d = tmp_path_factory.mktemp("four")
  train.train(_args(d, train_steps=6, save_every=2, max_steps_per_run=4))
  return d


def _copy(src, dst):
  import shutil
  shutil.copytree(src, dst)
  return dst


@pytest.mark.slow  # several training runs and an evaluation
@pytest.mark.parametrize("damage", ["metadata_removed", "emptied"])
def test_incomplete_latest_checkpoint_falls_back_in_train_and_evaluate(four_steps, tmp_path,
                                                                       capsys, damage):
  from model.runner import evaluate, t5x_checkpoints, train
  run = _copy(four_steps, tmp_path / "run")
  state = run / "checkpoint_4" / "state"
  if damage == "metadata_removed":
    (state / "_METADATA").unlink()
  else:
    import shutil
    shutil.rmtree(run / "checkpoint_4")
    (run / "checkpoint_4").mkdir()
  assert t5x_checkpoints.all_steps(str(run)) == [2]
  _, _, step = evaluate.load_checkpoint(str(run))
  assert step == 2
  assert "checkpoint_4 is incomplete" in capsys.readouterr().err
  result = train.train(_args(run, train_steps=6, save_every=2))
  out = capsys.readouterr().out
  assert "checkpoint_4 is incomplete (no state/_METADATA); using checkpoint_2" in out
  assert "resumed from checkpoint_2" in out
  assert result.step == 6 and t5x_checkpoints.all_steps(str(run)) == [2, 4, 6]
  # The incomplete directory is kept aside, not deleted.
  assert (run / "incomplete_checkpoint_4").is_dir()
  # The new checkpoint_4 equals the one of the undamaged run.
  a = t5x_checkpoints.restore_state_dict(str(four_steps / "checkpoint_4"))
  b = t5x_checkpoints.restore_state_dict(str(run / "checkpoint_4"))
  import numpy as np
  np.testing.assert_array_equal(a["target"]["embedder"]["input_embedding"],
                                b["target"]["embedder"]["input_embedding"])


def test_bit_flipped_latest_checkpoint_stops_train_and_evaluate(four_steps, tmp_path,
                                                               flip_a_bit):
  from model.runner import evaluate, t5x_checkpoints, train
  run = _copy(four_steps, tmp_path / "run")
  victim = flip_a_bit(run / "checkpoint_4")
  with pytest.raises(t5x_checkpoints.CorruptCheckpointError, match=rf"{victim} differs"):
    evaluate.load_checkpoint(str(run))
  with pytest.raises(t5x_checkpoints.CorruptCheckpointError, match=rf"{victim} differs"):
    train.train(_args(run, train_steps=6, save_every=2))
  assert t5x_checkpoints.all_steps(str(run)) == [2, 4]   # nothing overwritten


# -- resume: recorded flags and vocabulary ----------------------------------------------------

def test_resume_keeps_the_recorded_model_flags_and_says_so(four_steps, tmp_path, capsys):
  from model.runner import train
  run = _copy(four_steps, tmp_path / "run")
  result = train.train(_args(run, train_steps=6, save_every=2, dtype="bfloat16",
                             preset="tiny_gemma2", model_overrides={"num_layers": "5"}))
  assert result.step == 6
  out = capsys.readouterr().out
  assert "--dtype 'bfloat16' ignored, the run's 'float32' is kept" in out
  assert "--preset 'tiny_gemma2' ignored, the run's 'tiny_gemma1' is kept" in out
  recorded = json.loads((run / "train_args.json").read_text())
  assert (recorded["dtype"], recorded["preset"], recorded["model_overrides"]) == (
      "float32", "tiny_gemma1", {})
  assert json.loads((run / "model_config.json").read_text())["dtype"] == "float32"


def _swapped_vocabulary(path):
  """The bundled SentencePiece model with two ordinary pieces swapped: same id layout,
  other pieces."""
  from sentencepiece import sentencepiece_model_pb2
  from gemma_tasks import vocab
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(open(vocab.DEFAULT_MODEL_FILE, "rb").read())
  a, b = proto.pieces[1000], proto.pieces[1001]
  a.piece, b.piece = b.piece, a.piece
  open(path, "wb").write(proto.SerializeToString())
  return vocab.GemmaVocabulary(str(path))


def _register_qa(name, vocabulary, temp_task_names, tmp_path):
  import seqio
  from gemma_tasks import builders, sources
  qa = _write_jsonl(tmp_path / f"{name}.jsonl.gz",
                    [{"question": f"Question {i}?", "answers": [f"answer {i}"]}
                     for i in range(12)])
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  builders.add_qa_task(name, sources.JsonlDataSource(
      {"train": qa, "test": qa}, fields={"question": str, "answers": list}),
      vocabulary=vocabulary)
  if name not in temp_task_names:
    temp_task_names.append(name)


@pytest.mark.slow  # several training runs and an evaluation
def test_other_vocabulary_is_refused_on_resume_and_evaluation(tmp_path, temp_task_names, capsys):
  from model.runner import evaluate, train, vocab_record
  run = tmp_path / "run"
  _register_qa("toy_vocab_qa", None, temp_task_names, tmp_path)
  train.train(_args(run, task="toy_vocab_qa", train_steps=2, save_every=1,
                    max_steps_per_run=1))
  assert json.loads((run / "vocabulary.json").read_text())["vocab_size"] == 4096
  # The same task name, now tokenized with another file of the same id layout.
  _register_qa("toy_vocab_qa", _swapped_vocabulary(tmp_path / "other.model"), temp_task_names,
               tmp_path)
  with pytest.raises(vocab_record.VocabularyMismatchError,
                     match=r"other.model .*--allow_vocabulary_change"):
    train.train(_args(run, task="toy_vocab_qa", train_steps=2, save_every=1))
  with pytest.raises(vocab_record.VocabularyMismatchError, match=r"other.model"):
    evaluate.evaluate(evaluate.EvalArgs(checkpoint_dir=str(run), task="toy_vocab_qa",
                                        progress=False))
  # The override goes on, says so, and records the new vocabulary (and the one it replaced).
  result = train.train(_args(run, task="toy_vocab_qa", train_steps=2, save_every=1,
                             allow_vocabulary_change=True))
  assert result.step == 2
  assert "continuing because of --allow_vocabulary_change" in capsys.readouterr().out
  recorded = json.loads((run / "vocabulary.json").read_text())
  assert recorded["file"].endswith("other.model") and "replaced" in recorded


# -- signals ----------------------------------------------------------------------------------

@pytest.mark.slow  # a training CLI in a fresh interpreter, signalled
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_the_current_step_and_exits_cleanly(tmp_path, sig):
  from model.runner import t5x_checkpoints
  proc = subprocess.Popen(_cli(tmp_path, "--train_steps", "100000", "--save_every", "100000",
                               "--log_every", "1"),
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=ENV)
  try:
    for line in proc.stdout:   # wait until a few steps ran
      if line.startswith("[train] step 3:"):
        break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + sig, err[-2000:]
  assert "Traceback" not in err
  steps = t5x_checkpoints.all_steps(str(tmp_path))
  assert len(steps) == 1 and steps[0] >= 3
  saved = os.path.join(str(tmp_path), f"checkpoint_{steps[0]}")
  assert f"{signal.Signals(sig).name} received: stopped at step {steps[0]} and saved {saved}" \
      in out


# -- model.runner.evaluate flags ---------------------------------------------------------------------

def test_evaluate_refuses_batch_size_0_and_a_file_as_checkpoint_dir(four_steps, tmp_path, capsys):
  from model.runner import evaluate
  assert evaluate.main(["--checkpoint_dir", str(four_steps), "--task", "gemma_quiz_qa",
                        "--batch_size", "0", "--no_progress"]) == 2
  assert "--batch_size must be >= 1, got 0" in capsys.readouterr().err
  (tmp_path / "afile").write_text("x")
  assert evaluate.main(["--checkpoint_dir", str(tmp_path / "afile"), "--task",
                        "gemma_quiz_qa", "--no_progress"]) == 2
  err = capsys.readouterr().err
  assert f"{tmp_path / 'afile'} is a file, not a model.runner.train directory" in err
  assert "does not exist" not in err
  assert not (tmp_path / "afile" / "eval_test").exists()
