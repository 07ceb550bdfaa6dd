"""The Gemma vocabulary: special ids, exact round trips, tokenizer selection."""
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from gemma_seqio import special_tokens, template
from gemma_tasks import vocab


@pytest.fixture(scope="module")
def v():
  return vocab.GemmaVocabulary()


def test_special_ids(v):
  assert (v.pad_id, v.eos_id, v.bos_id, v.unk_id) == (0, 1, 2, 3)
  sp = v.tokenizer
  assert [sp.id_to_piece(i) for i in (0, 1, 2, 3, 106, 107)] == [
      "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
  assert v.encode("<start_of_turn>") == [special_tokens.START_OF_TURN_ID]
  assert v.encode("<end_of_turn>") == [special_tokens.END_OF_TURN_ID]
  assert v.vocab_size == 4096


@pytest.mark.parametrize("text", [
    template.format_prompt("Translate English to German: Open the file.")
    + template.format_response("Öffnen Sie die Datei."),
    "Grüße aus Köln: Äpfel, Öl, Übermaß, ß",
    "emoji 😀🚁👍🏽 and CJK 漢字",
    "  two leading spaces",
    "repeated   spaces\tand\ttabs",
    "\n\nleading newlines\n\n\ntrailing\n",
    " ",
    "",
])
def test_exact_round_trip(v, text):
  ids = v.encode(text)
  assert v.decode(ids) == text
  assert 3 not in ids  # byte fallback: nothing becomes <unk>


def test_tf_and_python_encoders_agree(v):
  import tensorflow as tf  # noqa: PLC0415
  text = template.format_prompt("Größe ändern 😀  x")
  assert v.encode_tf(tf.constant(text)).numpy().tolist() == v.encode(text)


def test_template_markers_are_single_tokens(v):
  ids = v.encode(template.format_prompt("Hi"))
  assert ids[0] == 106 and ids.count(106) == 2 and ids.count(107) == 1
  assert v.encode("<start_of_turn>user\n")[-1] == v.encode("\n")[0]


def test_tokenizer_path_argument_and_env(tmp_path, monkeypatch):
  copy = tmp_path / "tokenizer.model"
  copy.write_bytes(open(vocab.DEFAULT_MODEL_FILE, "rb").read())
  assert vocab.GemmaVocabulary(str(copy)).sentencepiece_model_file == str(copy)
  monkeypatch.setenv(vocab.ENV_VAR, str(copy))
  assert vocab.GemmaVocabulary().sentencepiece_model_file == str(copy)
  monkeypatch.setenv(vocab.ENV_VAR, str(tmp_path / "missing.model"))
  with pytest.raises(FileNotFoundError, match="missing.model.*GEMMA_TOKENIZER_PATH"):
    vocab.GemmaVocabulary()


def test_wrong_layout_is_refused(tmp_path):
  proto = model_pb2.ModelProto.FromString(open(vocab.DEFAULT_MODEL_FILE, "rb").read())
  proto.pieces[106].piece = "<not_a_turn>"
  bad = tmp_path / "bad.model"
  bad.write_bytes(proto.SerializeToString())
  with pytest.raises(ValueError, match=r"bad.model: id 106 is '<not_a_turn>'"):
    vocab.GemmaVocabulary(str(bad)).encode("x")


def test_bundled_model_is_reproducible(tmp_path, monkeypatch, load_tool):
  """tools/train_vocab.py regenerates the committed model byte for byte."""
  tv = load_tool("train_vocab")
  monkeypatch.setattr(tv, "OUT_PREFIX", str(tmp_path / "gemma_seqio_4k"))
  tv.main()
  assert (tmp_path / "gemma_seqio_4k.model").read_bytes() == open(vocab.DEFAULT_MODEL_FILE, "rb").read()
  assert spm.SentencePieceProcessor(model_file=str(tmp_path / "gemma_seqio_4k.model")).get_piece_size() == 4096


def test_equality_does_not_change_after_use(v, temp_task_names):
  """Two vocabularies of the same file compare equal before and after either is used, so a user
  task built with `GemmaVocabulary()` mixes with a built-in task (seqio compares them)."""
  import pickle  # noqa: PLC0415
  import seqio  # noqa: PLC0415
  import gemma_tasks  # noqa: F401,PLC0415  (registers the built-in tasks)
  from gemma_tasks import builders, sources  # noqa: PLC0415
  fresh = vocab.GemmaVocabulary()
  v.encode("used")  # one used, one not
  assert fresh == v and v == fresh
  fresh.encode("now both used")
  assert fresh == v
  assert pickle.loads(pickle.dumps(v)) == v  # gin deep-copies vocabularies
  name, mix = "gemma_test_vocab_user_quiz", "gemma_test_vocab_user_mix"
  temp_task_names.extend([name, mix])
  builtin = seqio.get_mixture_or_task("gemma_quiz_qa")
  builtin.output_features["targets"].vocabulary.encode("used")
  builders.add_qa_task(name, sources.embedded("quiz_qa", ("train",), fields={
      "question": str, "answers": list}), vocabulary=vocab.GemmaVocabulary())
  seqio.MixtureRegistry.add(mix, [(name, 1.0), ("gemma_quiz_qa", 1.0)])
  assert seqio.get_mixture_or_task(mix).output_features["targets"].vocabulary == v


@pytest.mark.parametrize("content,what", [
    (b"", "empty file"),
    (b"this is a text file, not a model\n" * 20, "not a SentencePiece model"),
    (b'{"vocab": {"a": 1}}', "not a SentencePiece model"),
])
def test_non_sentencepiece_file_fails_at_construction_naming_the_path(tmp_path, content, what):
  path = tmp_path / "tokenizer.model"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=f"{path}: {what}"):
    vocab.GemmaVocabulary(str(path))


def test_wrong_layout_fails_at_construction(tmp_path):
  proto = model_pb2.ModelProto.FromString(open(vocab.DEFAULT_MODEL_FILE, "rb").read())
  proto.pieces[2].piece = "<s>"
  bad = tmp_path / "t5like.model"
  bad.write_bytes(proto.SerializeToString())
  with pytest.raises(ValueError, match=r"t5like.model: id 2 is '<s>', expected '<bos>'"):
    vocab.GemmaVocabulary(str(bad))

