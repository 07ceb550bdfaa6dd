"""Registration of the gemma-seqio Mixtures (names are constants here)."""
import functools

import seqio

from gemma_tasks import tasks
from gemma_tasks.mixture_class import GemmaMixture

QA_MIX = "gemma_qa_mix"
ALL = "gemma_all"

# Explicit rates: TriviaQA is ~8x larger than the quiz; a 4:1 rate keeps the quiz visible
# without repeating its 960 training questions too often.
QA_MIX_RATES = ((tasks.TRIVIA_QA_OPEN, 4.0), (tasks.QUIZ_QA, 1.0))

EN_DE_WITH_QUIZ = "gemma_en_de_libreoffice_quiz"
# Translation, plus the quiz as 1 example in 20. In the recipe's 30 minutes (~190k examples) that
# is ~10 passes over the 960 quiz questions, at ~2% of the tokens (a quiz example is a third as
# long as a LibreOffice pair).
EN_DE_WITH_QUIZ_RATES = ((tasks.EN_DE_LIBREOFFICE, 19.0), (tasks.QUIZ_QA, 1.0))

EN_DE_WITH_GETTEXT = "gemma_en_de_libreoffice_gettext"
# Translation only, LibreOffice 16 : gettext 8: what the quiz of the next mixture is measured
# against (the BLEU it costs).
EN_DE_WITH_GETTEXT_RATES = ((tasks.EN_DE_LIBREOFFICE, 16.0), (tasks.EN_DE_GETTEXT, 8.0))

EN_DE_WITH_GETTEXT_AND_QUIZ = "gemma_en_de_libreoffice_gettext_quiz"
# The same, with the gettext UI messages as extra translation data
# (pairs whose English is a LibreOffice validation/test paragraph are not in the embedded gettext
# file): 2 LibreOffice pairs to 1 UI message (messages are shorter: ~9 words against ~13), the
# quiz 1 in 25. 1 message per LibreOffice pair was worse on validation (README, levers).
EN_DE_WITH_GETTEXT_AND_QUIZ_RATES = ((tasks.EN_DE_LIBREOFFICE, 16.0), (tasks.EN_DE_GETTEXT, 8.0),
                                     (tasks.QUIZ_QA, 1.0))

EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS = "gemma_en_de_libreoffice_gettext_quiz_facts"
# The same, plus the quiz's training facts as statements (3 per fact), 4 statements per quiz
# question: ~13 passes over the 2,880 statements in the recipe's 30 minutes at ~6% of the
# tokens (a statement is ~14 tokens). One run: 24.81 BLEU, reworded exact match 4.79 (README).
EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_RATES = (
    (tasks.EN_DE_LIBREOFFICE, 16.0), (tasks.EN_DE_GETTEXT, 8.0), (tasks.QUIZ_QA, 1.0),
    (tasks.QUIZ_FACTS, 4.0))

EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_X3 = "gemma_en_de_libreoffice_gettext_quiz_facts_x3"
# Three times the quiz and its statements (~16% of the tokens): the recipe's model then keeps
# its facts (reworded exact match 29.58) but loses 2.6 BLEU to them (23.12; README, the quiz).
EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_X3_RATES = (
    (tasks.EN_DE_LIBREOFFICE, 16.0), (tasks.EN_DE_GETTEXT, 8.0), (tasks.QUIZ_QA, 3.0),
    (tasks.QUIZ_FACTS, 12.0))

EN_DE_WITH_UI_GETTEXT_AND_QUIZ = "gemma_en_de_libreoffice_ui_gettext_quiz"
# The same, with the LibreOffice UI strings the gettext pairs lack (menu entries, buttons, box
# labels, which the help text names all the time) as a third source of translation data.
EN_DE_WITH_UI_GETTEXT_AND_QUIZ_RATES = (
    (tasks.EN_DE_LIBREOFFICE, 16.0), (tasks.EN_DE_GETTEXT, 8.0), (tasks.EN_DE_LIBREOFFICE_UI, 8.0),
    (tasks.QUIZ_QA, 1.0))


def _add(name, tasks_and_rates):
  # Our class: seqio's mixture with its per-task filter run inline (`mixture_class`).
  seqio.MixtureRegistry.add(name, tasks_and_rates, mixture_cls=GemmaMixture)


def register():
  """Adds every mixture once (after `tasks.register()`)."""
  if ALL in seqio.MixtureRegistry.names():
    return
  _add(QA_MIX, list(QA_MIX_RATES))
  _add(EN_DE_WITH_QUIZ, list(EN_DE_WITH_QUIZ_RATES))
  _add(EN_DE_WITH_GETTEXT, list(EN_DE_WITH_GETTEXT_RATES))
  _add(EN_DE_WITH_GETTEXT_AND_QUIZ, list(EN_DE_WITH_GETTEXT_AND_QUIZ_RATES))
  _add(EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS,
                            list(EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_RATES))
  _add(EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_X3,
                            list(EN_DE_WITH_GETTEXT_AND_QUIZ_FACTS_X3_RATES))
  _add(EN_DE_WITH_UI_GETTEXT_AND_QUIZ,
                            list(EN_DE_WITH_UI_GETTEXT_AND_QUIZ_RATES))
  by_size = functools.partial(seqio.mixing_rate_num_examples, split="train")
  qa_mix = seqio.get_mixture_or_task(QA_MIX)
  # Rates = number of training examples; a sub-mixture needs a number, so its size is used.
  _add(ALL, [
      (tasks.EN_DE_LIBREOFFICE, by_size),
      (tasks.EN_DE_GETTEXT, by_size),
      (QA_MIX, float(qa_mix.num_input_examples("train"))),
      (tasks.LM_PYTHON_DOCS, by_size),
  ])
