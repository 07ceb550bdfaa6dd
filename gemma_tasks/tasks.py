"""Registration of the gemma-seqio Tasks (names are constants here; no logic of its own)."""

import seqio

from gemma_tasks import builders, preprocessors, sources

EN_DE_LIBREOFFICE = "gemma_en_de_libreoffice"
EN_DE_GETTEXT = "gemma_en_de_gettext"
EN_DE_LIBREOFFICE_UI = "gemma_en_de_libreoffice_ui"
TRIVIA_QA_OPEN = "gemma_trivia_qa_open"
QUIZ_QA = "gemma_quiz_qa"
QUIZ_FACTS = "gemma_quiz_facts"
LM_PYTHON_DOCS = "gemma_lm_python_docs"
WMT19_ENDE = "gemma_wmt19_ende"
TRIVIA_QA_OPEN_TFDS = "gemma_trivia_qa_open_tfds"

EMBEDDED_TASKS = (EN_DE_LIBREOFFICE, EN_DE_GETTEXT, EN_DE_LIBREOFFICE_UI, TRIVIA_QA_OPEN, QUIZ_QA,
                  QUIZ_FACTS, LM_PYTHON_DOCS)
TFDS_TASKS = (WMT19_ENDE, TRIVIA_QA_OPEN_TFDS)
ALL_SPLITS = ("train", "validation", "test")
# The quiz's extra split: its training facts asked in words no training example uses.
QUIZ_SPLITS = ALL_SPLITS + ("reworded",)
# seqio's README split mapping for TriviaQA-open from TFDS (its test split has no answers).
TRIVIA_QA_TFDS_SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "validation"}


def register():
  """Adds every task once (importing `gemma_tasks` calls this)."""
  if EN_DE_LIBREOFFICE in seqio.TaskRegistry.names():
    return
  builders.add_translation_task(
      EN_DE_LIBREOFFICE,
      sources.embedded("libreoffice_en_de", ALL_SPLITS, fields={"en": str, "de": str}),
      source_key="en", target_key="de", prefix=preprocessors.TRANSLATE_PREFIX)
  builders.add_translation_task(
      EN_DE_GETTEXT,
      sources.embedded("gettext_en_de", ("train",), fields={"en": str, "de": str}),
      source_key="en", target_key="de", prefix=preprocessors.TRANSLATE_PREFIX)
  builders.add_translation_task(   # menu entries, buttons, box labels (tools/extract_ui_pairs.py)
      EN_DE_LIBREOFFICE_UI,
      sources.embedded("libreoffice_ui_en_de", ("train",), fields={"en": str, "de": str}),
      source_key="en", target_key="de", prefix=preprocessors.TRANSLATE_PREFIX)
  builders.add_qa_task(
      TRIVIA_QA_OPEN,
      sources.embedded("trivia_qa_open", ALL_SPLITS, fields={"question": str, "answers": list}))
  builders.add_qa_task(
      QUIZ_QA, sources.embedded("quiz_qa", QUIZ_SPLITS,
                                fields={"question": str, "answers": list, "src": str}),
      group_key="src")   # exact match per quiz table (elements, capitals, ...)
  # Each fact of the quiz's training split in three statements, read as plain text: a model that
  # reads a fact in several phrasings keys it on the thing asked about ("Algeria"), not on the
  # wording of one question, and answers the `reworded` questions (README, the quiz).
  builders.add_lm_task(
      QUIZ_FACTS, sources.embedded("quiz_facts", ("train",), fields={"text": str}))
  builders.add_lm_task(
      LM_PYTHON_DOCS, sources.embedded("python_docs", ALL_SPLITS, fields={"text": str}))

  # TFDS-backed tasks: need the TFDS data prepared locally (nothing downloads at run time here).
  builders.add_translation_task(
      WMT19_ENDE,
      seqio.TfdsDataSource(tfds_name="wmt19_translate/de-en:1.0.0", splits=("train", "validation")),
      source_key="en", target_key="de", prefix=preprocessors.TRANSLATE_PREFIX)
  builders.add_qa_task(
      TRIVIA_QA_OPEN_TFDS,
      seqio.TfdsDataSource(tfds_name="trivia_qa/unfiltered.nocontext:1.1.0",
                           splits=TRIVIA_QA_TFDS_SPLITS),
      preprocessor=preprocessors.trivia_qa_tfds)
