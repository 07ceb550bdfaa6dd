"""model.runner.evaluate: seqio.Evaluator on our checkpoints, mixtures, ragged predictions, JSON logger."""
import gzip
import json
import os

import numpy as np
import pytest

PAIRS = [("Find Bar", "Suchleiste"), ("Save the document.", "Speichern Sie das Dokument."),
         ("Close", "Schließen"), ("Open a file", "Eine Datei öffnen"), ("Print", "Drucken")]
QA = [("What is the capital of France?", ["Paris"]), ("Two plus two?", ["4", "four"]),
      ("Largest planet?", ["Jupiter"])]


def _write_jsonl(path, rows):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


@pytest.fixture
def toy_tasks(tmp_path, temp_task_names):
  """A tiny translation task, a tiny QA task and a mixture of both (registered, then removed)."""
  import seqio
  from gemma_tasks import builders, sources
  tr = _write_jsonl(tmp_path / "tr.jsonl.gz", [{"en": e, "de": d} for e, d in PAIRS])
  qa = _write_jsonl(tmp_path / "qa.jsonl.gz", [{"question": q, "answers": a} for q, a in QA])
  builders.add_translation_task(
      "toy_eval_ende",
      sources.JsonlDataSource({"test": tr, "train": tr}, fields={"en": str, "de": str}),
      source_key="en", target_key="de", prefix="Translate English to German: ")
  builders.add_qa_task(
      "toy_eval_qa", sources.JsonlDataSource({"test": qa, "train": qa},
                                             fields={"question": str, "answers": list}))
  seqio.MixtureRegistry.add("toy_eval_mix", [("toy_eval_ende", 1.0), ("toy_eval_qa", 1.0)])
  temp_task_names.extend(["toy_eval_ende", "toy_eval_qa", "toy_eval_mix"])
  return "toy_eval_ende", "toy_eval_qa", "toy_eval_mix"


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
  """An untrained tiny model saved as step 7, the way model.runner.train saves it."""
  import jax
  import optax
  from model import config
  from model.runner import t5x_checkpoints, train
  from model.runner.t5x_model import GemmaDecoderOnlyModel
  d = tmp_path_factory.mktemp("ckpt")
  cfg = config.tiny_gemma1()
  params = GemmaDecoderOnlyModel(cfg).get_initial_variables(
      jax.random.PRNGKey(0), {"decoder_input_tokens": (1, 8)})["params"]
  tx = optax.adam(1e-3)
  mgr = t5x_checkpoints.T5XCheckpointManager(str(d), keep=None)
  mgr.save(7, params, tx.init(params))
  mgr.close()
  (d / train.MODEL_CONFIG_FILE).write_text(json.dumps(train.config_to_json(cfg)))
  return d


def _evaluator(task, log_dir, logger_cls=()):
  import seqio
  from model.runner import inputs
  return seqio.Evaluator(task, inputs.feature_converter(pack=False), eval_split="test",
                         logger_cls=logger_cls, log_dir=log_dir)


def _oracle_predict_fn(evaluator, task_name, ragged=True):
  """Predicts every target exactly, as token rows of their own (different) lengths."""
  targets = [ex["targets"] for ex in evaluator.cached_task_datasets[task_name].as_numpy_iterator()]

  def predict_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    out = []
    for index, _ in dataset.as_numpy_iterator():
      t = targets[int(index)]
      out.append((int(index), list(t) if ragged else t))
    return out

  return predict_fn


def test_seqio_crashes_on_ragged_predictions_and_we_do_not(toy_tasks, tmp_path):
  from model.runner import evaluate
  ende, _, _ = toy_tasks
  ev = _evaluator(ende, str(tmp_path))
  raw = _oracle_predict_fn(ev, ende)
  # The bug being worked around (seqio 0.0.20 + NumPy 2): np.array over ragged rows.
  with pytest.raises(ValueError, match="inhomogeneous"):
    ev.evaluate(compute_metrics=True, predict_fn=raw)[0].result()
  ev = _evaluator(ende, str(tmp_path))   # a failed Evaluator re-raises on its next call
  metrics, _ = ev.evaluate(compute_metrics=True, predict_fn=evaluate.uniform_predictions(raw))
  assert metrics.result()[ende]["bleu"] == pytest.approx(100.0)


def test_pad_ragged():
  from model.runner import evaluate
  m = evaluate.pad_ragged([[5, 6, 107], [7], []])
  assert m.tolist() == [[5, 6, 107], [7, 0, 0], [0, 0, 0]] and m.dtype == np.int32


def test_json_logger_creates_its_directory(toy_tasks, tmp_path):
  import seqio
  from model.runner import evaluate
  ende, _, _ = toy_tasks
  out = tmp_path / "does" / "not" / "exist"
  ev = _evaluator(ende, str(out), logger_cls=[evaluate.json_logger_cls()])
  predict = evaluate.uniform_predictions(_oracle_predict_fn(ev, ende))
  ev.evaluate(compute_metrics=True, step=3, predict_fn=predict)[0].result()
  line = json.loads((out / f"{ende}-metrics.jsonl").read_text())
  assert line["step"] == 3 and line["bleu"] == pytest.approx(100.0)
  assert len((out / f"{ende}-000003.jsonl").read_text().splitlines()) == len(PAIRS)
  # seqio's own logger fails on the same directory layout (why the subclass exists).
  out2 = tmp_path / "plain" / "missing"
  ev2 = _evaluator(ende, str(out2), logger_cls=[seqio.JSONLogger])
  with pytest.raises(Exception):
    ev2.evaluate(compute_metrics=True, step=3, predict_fn=predict)[0].result()


def test_evaluate_checkpoint_over_a_mixture(toy_tasks, random_checkpoint, tmp_path, capsys):
  from model.runner import evaluate
  _, _, mix = toy_tasks
  out = tmp_path / "eval"
  summary = evaluate.evaluate(evaluate.EvalArgs(
      checkpoint_dir=str(random_checkpoint), task=mix, split="test", output_dir=str(out),
      batch_size=2, max_decode_length=8, baselines=True, progress=False))
  assert summary["step"] == 7
  # Each sub-task separately, with its own metrics, files and TensorBoard run.
  assert set(summary["tasks"]) == {"toy_eval_ende", "toy_eval_qa"}
  assert set(summary["tasks"]["toy_eval_ende"]["metrics"]) == {"bleu"}
  assert set(summary["tasks"]["toy_eval_qa"]["metrics"]) == {"exact_match", "f1"}
  assert summary["tasks"]["toy_eval_ende"]["examples"] == len(PAIRS)
  assert summary["tasks"]["toy_eval_qa"]["examples"] == len(QA)
  for name in ("toy_eval_ende", "toy_eval_qa"):
    line = json.loads((out / f"{name}-metrics.jsonl").read_text())
    assert line["step"] == 7
    preds = [json.loads(l) for l in (out / f"{name}-000007.jsonl").read_text().splitlines()]
    assert all("prediction" in p and "target" in p for p in preds)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / name))
  assert json.loads((out / "summary.json").read_text())["tasks"].keys() == summary["tasks"].keys()
  # Baselines: copying the source, most common training answer.
  base = summary["tasks"]["toy_eval_ende"]["baseline"]
  assert base["name"] == "copy the source" and 0 <= base["metrics"]["bleu"] < 100
  qa_base = summary["tasks"]["toy_eval_qa"]["baseline"]
  assert qa_base["name"].startswith("most common answer")
  printed = capsys.readouterr().out
  assert "toy_eval_ende (test, step 7, 5 examples" in printed and "exact_match" in printed


def test_predict_fn_returns_uniform_rows_that_stop(random_checkpoint, toy_tasks):
  from model.runner import evaluate
  ende, _, _ = toy_tasks
  model, params, step = evaluate.load_checkpoint(str(random_checkpoint))
  assert step == 7
  ev = _evaluator(ende, None)
  fn = evaluate.uniform_predictions(evaluate.make_predict_fn(
      model, params, batch_size=2, max_decode_length=5, progress=False))
  rows, aux = fn(ev.cached_model_datasets[ende])
  assert sorted(i for i, _ in rows) == list(range(len(PAIRS)))
  assert {len(t) for _, t in rows} == {5} and len(aux["scores"]) == len(PAIRS)
  # Same result as the model's own predict_batch on an unsorted, unpadded batch.
  ex = next(ev.cached_model_datasets[ende].as_numpy_iterator())[1]
  direct = model.predict_batch(params, {k: v[None] for k, v in ex.items()})
  row0 = dict(rows)[0]
  n = int(np.sum(row0 > 0))
  assert np.asarray(direct)[0, :n].tolist() == row0[:n].tolist()


def test_load_checkpoint_errors(random_checkpoint, tmp_path):
  from model.runner import evaluate
  with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3 .*available: \[7\]"):
    evaluate.load_checkpoint(str(random_checkpoint), step=3)
  with pytest.raises(FileNotFoundError, match="no checkpoint_<step>/state"):
    evaluate.load_checkpoint(str(tmp_path))
  model, _, step = evaluate.load_checkpoint(str(random_checkpoint / "checkpoint_7"))
  assert step == 7 and model.config.num_layers == 2


def test_format_table():
  from model.runner import evaluate
  text = evaluate.format_table("t", "test", 5, {"metrics": {"bleu": 21.3}, "examples": 9,
                                                "seconds": 1.0})
  assert text.splitlines()[0] == "t (test, step 5, 9 examples, 1.0 s)"
  assert "21.30" in text


def test_module_import_registers_user_tasks(tmp_path, monkeypatch, random_checkpoint,
                                            temp_task_names):
  from model.runner import evaluate
  data = _write_jsonl(tmp_path / "user.jsonl.gz", [{"en": e, "de": d} for e, d in PAIRS[:3]])
  (tmp_path / "my_user_tasks.py").write_text(
      "from gemma_tasks import builders, sources\n"
      "builders.add_translation_task('toy_user_ende', sources.JsonlDataSource(\n"
      f"    {{'test': {data!r}}}, fields={{'en': str, 'de': str}}),\n"
      "    source_key='en', target_key='de', prefix='Translate English to German: ')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  temp_task_names.append("toy_user_ende")
  summary = evaluate.evaluate(evaluate.EvalArgs(
      checkpoint_dir=str(random_checkpoint), task="toy_user_ende", split="test",
      output_dir=str(tmp_path / "out"), batch_size=4, max_decode_length=4, progress=False,
      module_imports=["my_user_tasks"]))
  assert summary["tasks"]["toy_user_ende"]["examples"] == 3
  with pytest.raises(ImportError, match="--module_imports 'no_such_tasks_module'"):
    evaluate.evaluate(evaluate.EvalArgs(checkpoint_dir=str(random_checkpoint), task="x",
                                        module_imports=["no_such_tasks_module"]))


def test_beam_search_evaluation(random_checkpoint, toy_tasks, tmp_path):
  from model.runner import evaluate
  from model.beams import BeamSearch
  ende, _, _ = toy_tasks
  model, params, _ = evaluate.load_checkpoint(str(random_checkpoint))
  ev = _evaluator(ende, None)
  beam = BeamSearch(num_beams=3, length_penalty=1.0)
  fn = evaluate.uniform_predictions(evaluate.make_predict_fn(
      model, params, batch_size=2, max_decode_length=5, progress=False, strategy=beam))
  rows, aux = fn(ev.cached_model_datasets[ende])
  assert sorted(i for i, _ in rows) == list(range(len(PAIRS)))
  # Each row is the best beam of the model's own predict_batch on that example alone.
  for index, ex in ev.cached_model_datasets[ende].as_numpy_iterator():
    one = {k: v[None] for k, v in ex.items()}
    direct, direct_aux = model.predict_batch_with_aux(
        params, one, decoder_params={"strategy": beam, "max_decode_steps": 5})
    got = dict(rows)[int(index)]
    assert np.asarray(direct)[0, :5].tolist() == got[:5].tolist()
    np.testing.assert_allclose(aux["scores"][[i for i, _ in rows].index(int(index))],
                               direct_aux["scores"][0], rtol=1e-5)
  # Through evaluate(): the summary says how it decoded.
  summary = evaluate.evaluate(evaluate.EvalArgs(
      checkpoint_dir=str(random_checkpoint), task=ende, split="test",
      output_dir=str(tmp_path / "beam"), batch_size=2, max_decode_length=5, progress=False,
      beam_size=3, length_penalty=1.0))
  assert summary["decoding"] == "beam search, 3 beams, length penalty 1.0"
  assert summary["tasks"][ende]["examples"] == len(PAIRS)
  args = evaluate.parse_args(
      ["--checkpoint_dir", "x", "--task", "t", "--beam_size", "4", "--length_penalty", "0.8"])
  assert (args.beam_size, args.length_penalty) == (4, 0.8)


def test_quiz_baseline_is_the_most_common_answer_of_each_table():
  """Recomputed from the raw files: per table, the training target most often seen (ties: the
  first in sorted order), scored on the test questions of that table."""
  import collections
  import seqio
  from gemma_tasks import aliases, metrics, sources
  from model.runner import evaluate

  def rows(split):
    with gzip.open(os.path.join(sources.DATA_DIR, f"quiz_qa.{split}.jsonl.gz"), "rt") as f:
      return [json.loads(line) for line in f]

  counts = collections.defaultdict(collections.Counter)
  for r in rows("train"):
    counts[r["src"]][aliases.pick_alias(r["answers"])] += 1
  test = rows("test")
  preds = [min(counts[r["src"]].items(), key=lambda kv: (-kv[1], kv[0]))[0] for r in test]
  expected = metrics.exact_match([r["answers"] for r in test], preds)["exact_match"]
  name, got = evaluate.baseline(seqio.get_mixture_or_task("gemma_quiz_qa"), "test")
  assert name == "most common answer of its group"
  assert got["exact_match"] == pytest.approx(expected) and expected > 0
  assert got["examples/elements"] == sum(r["src"].endswith("/elements") for r in test)


def test_split_loss_tool_weights_batches_by_their_answer_tokens(random_checkpoint, toy_tasks,
                                                                 load_tool):
  """tools/split_loss.py: the mean per answer token does not depend on how rows are batched
  (a mean of batch means would)."""
  tool = load_tool("split_loss")
  task = toy_tasks[0]
  kw = dict(examples=5, inputs_length=24, targets_length=8)
  one = tool.split_loss(str(random_checkpoint), task, "test", batch_size=1, **kw)
  three = tool.split_loss(str(random_checkpoint), task, "test", batch_size=3, **kw)
  assert one["step"] == three["step"] == 7
  assert one["tokens"] == three["tokens"] > 5
  assert one["loss"] == pytest.approx(three["loss"], rel=1e-5) and one["loss"] > 1.0
