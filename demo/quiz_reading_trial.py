"""Can the recipe's model answer a question on a fact it has only read? A trial, registered
for `--module_imports` the way a user adds a task:

    python -m model.runner.train --module_imports demo.quiz_reading_trial \\
        --task quiz_reading_trial --model_dir /tmp/quiz_trial --preset recipe_gemma2 \\
        --inputs_length 96 --targets_length 96 --batch_size 8 --packing best_fit \\
        --learning_rate 1.4e-3 --warmup_steps 60 --end_lr_factor 0.05 --weight_decay 0.1 \\
        --label_smoothing 0.1 --clip_norm 1.0 --dtype bfloat16 --train_steps 1200
    python -m model.runner.evaluate --checkpoint_dir /tmp/quiz_trial --task gemma_quiz_qa \\
        --split test --batch_size 64 --max_decode_length 32 --baselines   # and --split reworded

The mixture is the quiz's training questions (1) and three statements of EVERY quiz fact (4),
the validation and test facts' included, which no registered task contains: the model reads
the facts of the `test` questions but is never asked them. README (the quiz) has the result.
"""
import gzip
import json
import os

import seqio

from gemma_tasks import aliases, builders, sources, tasks
from tools.build_embedded_data import quiz_rewritten

TASK = "quiz_facts_every_split"
MIXTURE = "quiz_reading_trial"


def statements() -> list:
  """Three statements of each fact of the quiz's train, validation and test splits."""
  out = []
  for split in tasks.ALL_SPLITS:
    with gzip.open(os.path.join(sources.DATA_DIR, f"quiz_qa.{split}.jsonl.gz"), "rt",
                   encoding="utf-8") as f:
      for row in map(json.loads, f):
        out += quiz_rewritten(row["question"], aliases.pick_alias(row["answers"]))[0]
  return out


def _dataset(split, shuffle_files=False, seed=None):
  del split, shuffle_files, seed
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.data.Dataset.from_tensor_slices({"text": statements()})


if TASK not in seqio.TaskRegistry.names():
  builders.add_lm_task(TASK, seqio.FunctionDataSource(_dataset, splits=("train",)))
  seqio.MixtureRegistry.add(MIXTURE, [(tasks.QUIZ_QA, 1.0), (TASK, 4.0)])
