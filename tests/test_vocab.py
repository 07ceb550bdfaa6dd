"""The Gemma vocabulary: special ids, exact round trips, tokenizer selection."""
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from gemma_tasks import special_tokens, template, vocab


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


def test_bundled_model_is_reproducible(tmp_path, monkeypatch):
  """tools/train_vocab.py regenerates the committed model byte for byte."""
  import importlib.util  # noqa: PLC0415
  import os  # noqa: PLC0415
  spec = importlib.util.spec_from_file_location(
      "train_vocab", os.path.join(os.path.dirname(__file__), "..", "tools", "train_vocab.py"))
  tv = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tv)
  monkeypatch.setattr(tv, "OUT_PREFIX", str(tmp_path / "gemma_seqio_4k"))
  tv.main()
  assert (tmp_path / "gemma_seqio_4k.model").read_bytes() == open(vocab.DEFAULT_MODEL_FILE, "rb").read()
  assert spm.SentencePieceProcessor(model_file=str(tmp_path / "gemma_seqio_4k.model")).get_piece_size() == 4096
