"""Fingerprints: a cache written for another vocabulary / preprocessors is refused on load."""
import functools

import pytest

import cache_scripts
from cache_scripts import cache_tasks
from gemma_tasks import cache_fingerprint as fingerprint
from gemma_tasks import cache_metadata, cached

# Slow (`make test-slow`, run by CI): Beam runs of the caching job.
pytestmark = pytest.mark.slow

NAME = "gemma_test_cache_fingerprint_quiz"
LENGTHS = {"inputs": 512, "targets": 512}


def _register(*, vocabulary=None, prefix_question=""):
  """Real quiz QA data and preprocessors; optionally another vocabulary or another prompt."""
  import seqio
  from gemma_tasks import builders, preprocessors, sources
  if NAME in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(NAME)
  pre = None
  if prefix_question:
    def prefixed_qa(dataset):
      dataset = dataset.map(lambda ex: {**ex, "question": prefix_question + ex["question"]})
      return preprocessors.qa(dataset)
    pre = prefixed_qa
  return builders.add_qa_task(
      NAME, sources.embedded("quiz_qa", ("validation",), fields={"question": str, "answers": list}),
      vocabulary=vocabulary, preprocessor=pre)


@pytest.fixture
def cached_dir(tmp_path, temp_task_names, global_cache_dirs):
  import seqio
  temp_task_names.append(NAME)
  _register()
  report = cache_tasks.cache_tasks([NAME], str(tmp_path), min_shards=1, spot_check_examples=8)
  assert report.ok, report.summary()
  seqio.add_global_cache_dirs([str(tmp_path)])
  return tmp_path


def _load(split="validation"):
  import seqio
  task = seqio.get_mixture_or_task(NAME)
  return sum(1 for _ in task.get_dataset(LENGTHS, split, use_cached=True, shuffle=False))


def test_same_task_loads(cached_dir):
  assert _load() == 108
  meta = cache_metadata.read_metadata(str(cached_dir / NAME))
  import seqio
  assert meta["tasks"][NAME] == fingerprint.task_fingerprint(seqio.get_mixture_or_task(NAME))


def test_other_vocabulary_is_refused(cached_dir, tmp_path_factory):
  import seqio
  import sentencepiece as spm
  from gemma_seqio import template
  # A different SentencePiece model with the same special-id layout (so only the ids differ).
  d = tmp_path_factory.mktemp("vocab")
  lines = [template.format_prompt(f"question number {i} about capitals") for i in range(300)]
  (d / "corpus.txt").write_text("\n".join(lines))
  spm.SentencePieceTrainer.train(
      input=str(d / "corpus.txt"), model_prefix=str(d / "other"), vocab_size=200,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2, hard_vocab_limit=False,
      user_defined_symbols=[f"<unused{i}>" for i in range(102)] + ["<start_of_turn>", "<end_of_turn>"])
  _register(vocabulary=seqio.SentencePieceVocabulary(str(d / "other.model")))
  with pytest.raises(cache_scripts.CacheFingerprintError) as err:
    _load()
  message = str(err.value)
  assert NAME in message and str(cached_dir / NAME) in message
  assert "vocabulary[inputs]" in message and "vocabulary[targets]" in message
  assert "--overwrite" in message


def test_other_preprocessors_are_refused(cached_dir):
  _register(prefix_question="Quiz: ")
  with pytest.raises(cache_scripts.CacheFingerprintError, match=r"changed: preprocessor\[0\]"):
    _load()


def test_env_override_turns_refusal_into_warning(cached_dir, monkeypatch, caplog):
  _register(prefix_question="Quiz: ")
  monkeypatch.setenv(cached.IGNORE_FINGERPRINT_ENV, "1")
  with caplog.at_level("WARNING"):
    assert _load() == 108
  assert "Ignored because" in caplog.text


def test_fingerprint_is_stable_and_path_independent(tmp_path):
  import seqio
  import shutil
  from gemma_tasks import vocab
  task = seqio.get_mixture_or_task("gemma_quiz_qa")
  assert fingerprint.task_fingerprint(task) == fingerprint.task_fingerprint(task)
  # The same model file elsewhere: same vocabulary digest.
  copy = tmp_path / "copy.model"
  shutil.copy(vocab.DEFAULT_MODEL_FILE, copy)
  assert fingerprint.vocabulary_digest(vocab.GemmaVocabulary(str(copy))) == \
      fingerprint.vocabulary_digest(vocab.get_vocabulary())
  # Components name what they cover.
  names = set(fingerprint.task_fingerprint(task)["components"])
  assert {"vocabulary[inputs]", "vocabulary[targets]", "output_features", "source"} <= names
  assert any(n.startswith("preprocessor[0]:gemma_tasks.preprocessors.qa") for n in names)


def test_describe_follows_same_package_helpers():
  """A preprocessor's fingerprint covers the helpers and constants it uses in its package."""
  from gemma_tasks import preprocessors
  text = "\n".join(fingerprint._function_closure(preprocessors.qa))
  assert "def as_prompt" in text and "def choose_aliases" in text and "def pick_indices" in text
  assert "def normalize_answer" in text   # the alias choice depends on it
  assert fingerprint.describe(functools.partial(preprocessors.qa, question_key="q")) != \
      fingerprint.describe(functools.partial(preprocessors.qa, question_key="x"))


def test_reregistered_task_is_checked_even_when_it_gets_the_old_tasks_id(cached_dir, monkeypatch):
  """The check is remembered per task object, not per `id()`: CPython gives a new object the
  address (id) of a freed one, so a task re-registered with other preprocessors could inherit
  the old task's "checked" mark and read the stale cache. Which address a new task gets is up to
  the allocator, so the reuse is simulated: every object gets the same id in the reader."""
  monkeypatch.setattr(cached, "id", lambda obj: 1, raising=False)
  assert _load() == 108  # the registered task is checked (and remembered)
  _register(prefix_question="Quiz: ")  # same name, other preprocessors, "same id"
  with pytest.raises(cache_scripts.CacheFingerprintError, match=r"changed: preprocessor\[0\]"):
    _load()
