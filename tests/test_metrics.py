"""BLEU against sacrebleu itself; exact match and postprocessors on hand-made cases."""
import pytest
import sacrebleu

from gemma_tasks import metrics, postprocessors


def test_bleu_matches_sacrebleu_directly():
  preds = ["Die Suchleiste wird angezeigt.", "Öffnen Sie das Menü Datei.", "Hallo Welt"]
  refs = ["Die Suchleiste wird eingeblendet.", "Öffnen Sie das Menü Datei.", "Hallo, Welt!"]
  expected = sacrebleu.corpus_bleu(preds, [refs], smooth_method="exp", tokenize="intl").score
  assert metrics.bleu(refs, preds)["bleu"] == pytest.approx(expected)
  assert 0 < expected < 100
  assert metrics.bleu(refs, refs)["bleu"] == pytest.approx(100.0)


def test_bleu_length_mismatch():
  with pytest.raises(ValueError, match="2 targets vs 1 predictions"):
    metrics.bleu(["a", "b"], ["a"])


@pytest.mark.parametrize("pred,aliases,em", [
    ("The Beatles", ["Beatles"], 100.0),
    ("beatles!", ["The Beatles", "Fab Four"], 100.0),
    ("Fab  four", ["The Beatles", "Fab Four"], 100.0),
    ("Rolling Stones", ["The Beatles"], 0.0),
    ("", ["x"], 0.0),
])
def test_exact_match_cases(pred, aliases, em):
  assert metrics.exact_match([aliases], [pred])["exact_match"] == em


def test_exact_match_averages_and_f1():
  out = metrics.exact_match([["Paris"], ["New York City"]], ["Paris", "New York"])
  assert out["exact_match"] == 50.0
  assert out["f1"] == pytest.approx(100 * (1.0 + 0.8) / 2)


def test_postprocessors_strip_template():
  assert postprocessors.strip_template("Suchleiste<end_of_turn>\n<start_of_turn>user\nx") == "Suchleiste"
  assert postprocessors.strip_template(b"<start_of_turn>model\nHallo<end_of_turn>") == "Hallo"
  assert postprocessors.strip_template("no marker ") == "no marker"
  ex = {"answers": [b"Paris", "City of Light"]}
  assert postprocessors.qa_answers(b"Paris<end_of_turn>", example=ex, is_target=True) == ["Paris", "City of Light"]
  assert postprocessors.qa_answers(b"Paris<end_of_turn>", example=ex, is_target=False) == "Paris"


@pytest.mark.parametrize("pred", ["", "]", "the", "a ."])
def test_aliases_that_normalise_to_empty_match_nothing(pred):
  """An alias like "]" or "A" normalises to "" and would count an empty prediction as right."""
  out = metrics.exact_match([["]", "Moscow"], ["A", "The letter A"]], [pred, pred])
  assert out == {"exact_match": 0.0, "f1": 0.0}
  assert metrics.exact_match([["]", "Moscow"]], ["moscow"])["exact_match"] == 100.0


def test_example_without_a_scorable_alias_is_an_error():
  with pytest.raises(ValueError, match=r"example 1: no answer alias is left after normalisation "
                                       r"\(aliases \['\]', 'the'\]\)"):
    metrics.exact_match([["Paris"], ["]", "the"]], ["Paris", ""])


def test_normalize_answer_is_the_squad_definition_on_every_embedded_alias():
  """The one-call punctuation removal gives what SQuAD's character filter gives."""
  import gzip, json, os, re, string  # noqa: E401,PLC0415
  from gemma_tasks import sources  # noqa: PLC0415
  punct = set(string.punctuation) | set("‘’´`“”«»„")

  def squad(text):   # SQuAD's normalize_answer, with our extra quote marks and "_" as a space
    text = text.lower().replace("_", " ")
    text = "".join(ch for ch in text if ch not in punct)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

  texts = ["  The  Beatles' \"Help!\" ", "«Ça»_va", "A.N. Other", "theatre the", "İstanbul ΣΑΣ", ""]
  for name in ("quiz_qa.train", "quiz_qa.test", "trivia_qa_open.validation", "trivia_qa_open.train"):
    with gzip.open(os.path.join(sources.DATA_DIR, f"{name}.jsonl.gz"), "rt") as f:
      texts += [a for line in f for a in json.loads(line)["answers"]]
  assert len(texts) > 50_000
  assert [metrics.normalize_answer(t) for t in texts] == [squad(t) for t in texts]
