"""Registered tasks and mixtures on the embedded data, TFDS tasks on mock data, user helpers."""
import gzip
import importlib.util
import json
import os

import pytest
import seqio
import tensorflow_datasets as tfds

import gemma_tasks
from gemma_tasks import __main__ as cli
from gemma_seqio import template
from gemma_tasks import aliases, builders, mixtures, preprocessors, rates, sources, tasks

LENGTHS = {"inputs": 128, "targets": 64}


def test_fixed_names_are_registered():
  for name in ("gemma_en_de_libreoffice", "gemma_trivia_qa_open", "gemma_quiz_qa",
               "gemma_lm_python_docs", "gemma_wmt19_ende", "gemma_trivia_qa_open_tfds"):
    assert name in seqio.TaskRegistry.names()
  for name in ("gemma_qa_mix", "gemma_all", "gemma_en_de_libreoffice_quiz",
               "gemma_en_de_libreoffice_gettext_quiz", "gemma_en_de_libreoffice_gettext_quiz_facts",
               "gemma_en_de_libreoffice_gettext_quiz_facts_x3", "gemma_en_de_libreoffice_gettext"):
    assert name in seqio.MixtureRegistry.names()


@pytest.mark.parametrize("name", tasks.EMBEDDED_TASKS)
def test_embedded_task_tokens_decode_to_the_formatted_text(name):
  task = seqio.get_mixture_or_task(name)
  vocab = task.output_features["targets"].vocabulary
  split = "validation" if "validation" in task.splits else "train"
  examples = list(task.get_dataset(LENGTHS, split=split, shuffle=False).take(20))
  assert len(examples) == 20
  for ex in examples:
    assert ex["targets"].shape[0] > 0 and 2 not in ex["inputs"].numpy()  # no BOS in task features
    if task.output_features["inputs"].required:   # chat tasks; LM tasks have no inputs
      assert vocab.decode(ex["inputs"].numpy().tolist()) == ex["inputs_pretokenized"].numpy().decode()
      assert ex["inputs"].numpy()[0] == 106
      assert ex["targets"].numpy()[-1] == 107 or len(ex["targets"]) == LENGTHS["targets"]
    else:
      assert len(ex["targets"]) <= LENGTHS["targets"] and ex["inputs"].shape == (0,)


def _rows(name):
  with gzip.open(os.path.join(sources.DATA_DIR, name), "rt", encoding="utf-8") as f:
    return [json.loads(l) for l in f]


def test_libreoffice_splits_by_help_file_and_sizes_documented():
  with open(os.path.join(sources.DATA_DIR, "split_sizes.json")) as f:
    sizes = json.load(f)
  files = {}
  for split in ("train", "validation", "test"):
    rows = _rows(f"libreoffice_en_de.{split}.jsonl.gz")
    assert len(rows) == sizes[f"libreoffice_en_de.{split}"]
    files[split] = {r["id"].split("#")[0] for r in rows}
  assert not files["train"] & files["validation"]
  assert not files["train"] & files["test"]
  assert not files["validation"] & files["test"]
  assert sum(sizes[f"libreoffice_en_de.{s}"] for s in ("train", "validation", "test")) == 31923


def test_gettext_pairs_hold_no_libreoffice_paragraph_that_is_evaluated():
  """The LibreOffice UI catalog shares paragraphs with the help (extended tips): a model trained
  on the gettext pairs must not have seen a validation or test source with its translation."""
  def text(s):
    return " ".join(s.split())
  gettext = {text(r["en"]) for r in _rows("gettext_en_de.train.jsonl.gz")}
  for split in ("validation", "test"):
    assert not gettext & {text(r["en"]) for r in _rows(f"libreoffice_en_de.{split}.jsonl.gz")}
  # ... while the train split's paragraphs may be there (2,000+ are: the same messages).
  assert len(gettext & {text(r["en"]) for r in _rows("libreoffice_en_de.train.jsonl.gz")}) > 2000


def test_trivia_qa_official_test_split_keeps_all_aliases():
  task = seqio.get_mixture_or_task(tasks.TRIVIA_QA_OPEN)
  assert task.num_input_examples("test") == 11313
  assert task.num_input_examples("train") + task.num_input_examples("validation") == 8837
  ex = next(iter(task.get_dataset(LENGTHS, split="test", shuffle=False)))
  raw = _rows("trivia_qa_open.test.jsonl.gz")[0]
  assert [a.decode() for a in ex["answers"].numpy()] == [a for a in raw["answers"] if a.strip()]


def test_qa_mix_rates_are_explicit():
  mix = seqio.get_mixture_or_task(mixtures.QA_MIX)
  got = {t.name: mix.get_rate(t) for t in mix.tasks}
  assert got == {tasks.TRIVIA_QA_OPEN: 4.0, tasks.QUIZ_QA: 1.0}


def test_quiz_is_scored_per_table():
  task = seqio.get_mixture_or_task(tasks.QUIZ_QA)
  examples = list(task.get_dataset(LENGTHS, split="test", shuffle=False).as_numpy_iterator())
  raw = _rows("quiz_qa.test.jsonl.gz")
  assert [ex["group"].decode() for ex in examples] == [r["src"].split("/")[-1] for r in raw]
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
             for ex in examples]
  # Right on the element symbols only, wrong elsewhere.
  predictions = [t["answers"][0] if t["group"] == "elements" else "no idea" for t in targets]
  (metric_fn,) = task.predict_metric_fns
  scores = metric_fn(targets, predictions)
  n_elements = sum(t["group"] == "elements" for t in targets)
  assert scores["exact_match/elements"] == 100.0 and scores["exact_match/africa"] == 0.0
  assert scores["examples/elements"] == n_elements == 22
  assert scores["exact_match"] == pytest.approx(100.0 * n_elements / len(examples))


def _build_tool():
  spec = importlib.util.spec_from_file_location(
      "build_embedded_data", os.path.join(os.path.dirname(__file__), "..", "tools",
                                          "build_embedded_data.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_quiz_facts_and_reworded_questions_are_the_training_facts_only():
  """Three statements and one reworded question per training question, none of a held-out fact,
  and no reworded question in the words of any quiz question."""
  tool = _build_tool()
  train = _rows("quiz_qa.train.jsonl.gz")
  facts = [r["text"] for r in _rows("quiz_facts.train.jsonl.gz")]
  reworded = _rows("quiz_qa.reworded.jsonl.gz")
  expected_facts, expected_questions = [], []
  for r in train:
    statements, question = tool.quiz_rewritten(r["question"], aliases.pick_alias(r["answers"]))
    expected_facts += statements
    expected_questions.append(question)
  assert facts == expected_facts and len(facts) == 3 * len(train) == 2880
  assert [r["question"] for r in reworded] == expected_questions
  assert [(r["answers"], r["src"]) for r in reworded] == [(r["answers"], r["src"]) for r in train]
  asked = {r["question"] for split in ("train", "validation", "test")
           for r in _rows(f"quiz_qa.{split}.jsonl.gz")}
  assert not asked & set(expected_questions)
  # A held-out fact's statement would end in its answer after its subject: none does.
  held_out = _rows("quiz_qa.test.jsonl.gz") + _rows("quiz_qa.validation.jsonl.gz")
  read = set(facts)
  for r in held_out:
    statements, _ = tool.quiz_rewritten(r["question"], aliases.pick_alias(r["answers"]))
    assert not set(statements) & read, r
  with pytest.raises(ValueError, match=r"matches no pattern.*'Who is it\?'"):
    tool.quiz_rewritten("Who is it?", "me")


def test_quiz_reworded_split_reads_like_the_test_split():
  task = seqio.get_mixture_or_task(tasks.QUIZ_QA)
  ex = next(task.get_dataset(LENGTHS, split="reworded", shuffle=False).as_numpy_iterator())
  expected = {"inputs_pretokenized": template.format_prompt("Name the capital of Algeria."),
              "targets_pretokenized": template.format_response("Algiers"), "group": "africa"}
  assert {k: ex[k].decode() for k in expected} == expected
  statement = next(seqio.get_mixture_or_task(tasks.QUIZ_FACTS).get_dataset(
      LENGTHS, split="train", shuffle=False).as_numpy_iterator())
  vocab = task.output_features["targets"].vocabulary
  assert statement["targets"][-1] == 1   # EOS: one statement, one document
  assert vocab.decode(statement["targets"][:-1].tolist()) == "The capital of Algeria is Algiers."
  assert statement["inputs"].shape == (0,)


@pytest.mark.parametrize("name, rates", [
    (mixtures.EN_DE_WITH_QUIZ, mixtures.EN_DE_WITH_QUIZ_RATES),
    (mixtures.EN_DE_WITH_GETTEXT, mixtures.EN_DE_WITH_GETTEXT_RATES),
    (mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ, mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ_RATES),
    (mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS, mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_RATES),
    (mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_X3,
     mixtures.EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_X3_RATES)])
def test_translation_mixtures_feed_each_task_at_its_rate(name, rates):
  mix = seqio.get_mixture_or_task(name)
  assert {t.name: mix.get_rate(t) for t in mix.tasks} == dict(rates)
  ds = seqio.get_dataset(name, LENGTHS, seqio.PrefixLMFeatureConverter(pack=False, bos_id=2),
                         dataset_split="train", shuffle=True, seed=0)
  vocab = seqio.get_mixture_or_task(tasks.QUIZ_QA).output_features["inputs"].vocabulary
  prompts = [vocab.decode(ex["decoder_input_tokens"].tolist()) for ex in ds.take(400).as_numpy_iterator()]
  # Which task an example came from: the quiz has no translation prefix; a translation's English
  # is in one task's training file only (messages that are in both files are not counted).
  english = {task: {r["en"] for r in _rows(f"{data}.train.jsonl.gz")} for task, data in (
      (tasks.EN_DE_LIBREOFFICE, "libreoffice_en_de"), (tasks.EN_DE_GETTEXT, "gettext_en_de"))}
  counts = {task: 0 for task, _ in rates}
  for prompt in prompts:
    if "<start_of_turn>" not in prompt:   # plain text: a statement of a quiz fact
      counts[tasks.QUIZ_FACTS] += 1
      continue
    if preprocessors.TRANSLATE_PREFIX not in prompt:
      counts[tasks.QUIZ_QA] += 1
      continue
    source = prompt.split(preprocessors.TRANSLATE_PREFIX, 1)[1].split("<end_of_turn>")[0]
    owners = [task for task in english if source in english[task]]
    if len(owners) == 1:
      assert owners[0] in counts, (name, source)
      counts[owners[0]] += 1
  total = sum(rate for _, rate in rates)
  for task, rate in rates:   # within ~3 standard deviations of the expected count
    expected = 400 * rate / total
    assert abs(counts[task] - expected) <= 3 * (expected ** 0.5) + 0.1 * expected, (task, counts)


def test_gemma_all_rates_are_example_counts_with_a_nested_mixture():
  mix = seqio.get_mixture_or_task(mixtures.ALL)
  qa = seqio.get_mixture_or_task(mixtures.QA_MIX)
  got = {t.name: mix.get_rate(t) for t in mix.tasks}
  n = {t: seqio.get_mixture_or_task(t).num_input_examples("train")
       for t in (tasks.EN_DE_LIBREOFFICE, tasks.TRIVIA_QA_OPEN, tasks.QUIZ_QA)}
  assert got[tasks.EN_DE_LIBREOFFICE] == n[tasks.EN_DE_LIBREOFFICE]
  qa_total = n[tasks.TRIVIA_QA_OPEN] + n[tasks.QUIZ_QA]
  assert got[tasks.TRIVIA_QA_OPEN] == pytest.approx(qa_total * 4 / 5)
  assert got[tasks.QUIZ_QA] == pytest.approx(qa_total / 5)
  assert mixtures.QA_MIX in mix.rate_per_task_name and qa.name == mixtures.QA_MIX
  ds = seqio.get_dataset(mixtures.ALL, LENGTHS, seqio.PrefixLMFeatureConverter(pack=False, bos_id=2),
                         dataset_split="train", shuffle=True, seed=0)
  assert len(list(ds.take(8))) == 8


def test_unimax_rates():
  got = rates.unimax_rates({"a": 10, "b": 1000, "c": 100}, budget=900, max_epochs=3)
  # a capped at 3 epochs (30); the 870 left are split evenly by b and c, c capped at 300.
  assert got == {"a": 30.0, "b": 570.0, "c": 300.0}
  assert sum(rates.unimax_rates({"a": 5, "b": 5}, budget=4, max_epochs=1).values()) == 4
  with pytest.raises(ValueError, match="no examples"):
    rates.unimax_rates({"a": 0}, budget=1, max_epochs=1)


def test_unknown_name_lists_closest():
  with pytest.raises(ValueError, match=r"gemma_en_de_librofice.*Closest registered names: gemma_en_de_libreoffice"):
    gemma_tasks.get_task_or_mixture("gemma_en_de_librofice")


@pytest.mark.parametrize("name,key", [(tasks.WMT19_ENDE, "source"), (tasks.TRIVIA_QA_OPEN_TFDS, "answers")])
def test_tfds_tasks_on_mock_data(name, key):
  task = seqio.get_mixture_or_task(name)
  with tfds.testing.mock_data(num_examples=4):
    exs = list(task.get_dataset(LENGTHS, split="validation", shuffle=False, try_in_mem_cache=False))
  assert len(exs) >= 1
  for ex in exs:
    assert ex["inputs"].numpy()[0] == 106 and key in ex
    assert ex["inputs_pretokenized"].numpy().decode().startswith("<start_of_turn>user\n")
    assert ex["targets_pretokenized"].numpy().decode().endswith("<end_of_turn>")


def test_user_translation_task_from_jsonl(tmp_path, temp_task_names):
  for split, pairs in {"train": [("Hello", "Hallo")], "test": [("Yes", "Ja"), ("No", "Nein")]}.items():
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      for en, de in pairs:
        f.write(json.dumps({"english": en, "german": de}) + "\n")
  temp_task_names.append("test_user_en_de")
  builders.add_translation_task(
      "test_user_en_de",
      sources.JsonlDataSource({s: str(tmp_path / f"{s}.jsonl") for s in ("train", "test")},
                              fields={"english": str, "german": str}),
      source_key="english", target_key="german", prefix="Translate English to German: ")
  task = seqio.get_mixture_or_task("test_user_en_de")
  exs = list(task.get_dataset(LENGTHS, split="test", shuffle=False))
  assert [e["targets_pretokenized"].numpy().decode() for e in exs] == [
      template.format_response("Ja"), template.format_response("Nein")]
  assert task.metric_fns[0].__name__ == "bleu"


def test_cli_list_and_show(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert "gemma_en_de_libreoffice" in out and "mixture  gemma_all" in out
  assert cli.main(["show", "gemma_quiz_qa", "--split", "validation", "-n", "2"]) == 0
  out = capsys.readouterr().out
  assert out.count("--- gemma_quiz_qa [validation] example") == 2
  assert "formatted  inputs: '<start_of_turn>user\\n" in out and "ids        inputs (" in out
  assert cli.main(["show", "gemma_quiz_q"]) == 2
  assert "Closest registered names: gemma_quiz_qa" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["quiz_qa", "trivia_qa_open"])
def test_embedded_qa_answers_are_scorable(name):
  """Every example has an alias that survives normalisation; the quiz (built from bsdgames'
  `[a|b]`/`{x}` syntax) has no alias that normalises to nothing, such as a stray "]"."""
  from gemma_tasks import metrics  # noqa: PLC0415
  with open(os.path.join(sources.DATA_DIR, "split_sizes.json")) as f:
    sizes = json.load(f)
  for split in ("train", "validation", "test"):
    path = os.path.join(sources.DATA_DIR, f"{name}.{split}.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
    assert len(rows) == sizes[f"{name}.{split}"], path
    for i, row in enumerate(rows, 1):
      normalised = [metrics.normalize_answer(a) for a in row["answers"]]
      assert any(normalised), f"{path}:{i}: {row}"
      if name == "quiz_qa":
        assert all(normalised), f"{path}:{i}: {row}"


@pytest.mark.parametrize("command", [["show", "gemma_quiz_qa", "-n", "-1"],
                                     ["show", "gemma_quiz_qa", "-n", "0"], ["demo", "-n", "-1"]])
def test_cli_refuses_a_count_below_one(capsys, command):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(command)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert f"argument -n: must be a whole number of at least 1, got {command[-1]!r}" in err


def test_quiz_reading_trial_reads_the_test_facts_it_is_never_asked():
  """demo.quiz_reading_trial (README, the quiz): statements of every split's facts, questions of
  the training split only."""
  from demo import quiz_reading_trial as trial  # noqa: PLC0415
  mix = seqio.get_mixture_or_task(trial.MIXTURE)
  assert {t.name: mix.get_rate(t) for t in mix.tasks} == {tasks.QUIZ_QA: 1.0, trial.TASK: 4.0}
  task = seqio.get_mixture_or_task(trial.TASK)
  vocab = task.output_features["targets"].vocabulary
  read = [vocab.decode(ex["targets"][:-1].tolist()) for ex in task.get_dataset(
      {"inputs": 8, "targets": 256}, split="train", shuffle=False).as_numpy_iterator()]
  tool = _build_tool()
  facts = {split: [t for r in _rows(f"quiz_qa.{split}.jsonl.gz")
                   for t in tool.quiz_rewritten(r["question"], aliases.pick_alias(r["answers"]))[0]]
           for split in tasks.ALL_SPLITS}
  assert read == facts["train"] + facts["validation"] + facts["test"]
  assert len(facts["test"]) == 3 * 132
  # The registered task reads the training facts only; the trial adds what `test` asks.
  assert [r["text"] for r in _rows("quiz_facts.train.jsonl.gz")] == facts["train"]
