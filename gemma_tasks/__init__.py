"""gemma_tasks: Gemma vocabulary, dialog template, preprocessors, metrics and SeqIO tasks.

Importing the package registers the Tasks and Mixtures:

>>> import gemma_tasks, seqio
>>> seqio.get_mixture_or_task("gemma_en_de_libreoffice").splits
('train', 'validation', 'test')
"""
from gemma_tasks import mixtures, tasks
from gemma_tasks.registry import get_task_or_mixture
from gemma_tasks.special_tokens import (BOS_ID, END_OF_TURN_ID, EOS_ID, PAD_ID,
                                        START_OF_TURN_ID, UNK_ID)
from gemma_tasks.vocab import GemmaVocabulary, get_vocabulary

tasks.register()
mixtures.register()
