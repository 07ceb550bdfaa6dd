"""A user's task, added the way a user adds one: LibreOffice help files the embedded data does
not contain, scored as a test split with `model.runner.evaluate --module_imports demo.heldout_help`.

    python tools/extract_help_pairs.py --help_dir x/usr/share/libreoffice/help \\
        --out /tmp/libreoffice_heldout.jsonl.gz          # README: from the Debian packages
    LIBREOFFICE_HELDOUT=/tmp/libreoffice_heldout.jsonl.gz python -m model.runner.evaluate \\
        --module_imports demo.heldout_help --task libreoffice_heldout_en_de --split test \\
        --checkpoint_dir <demo out>/model --beam_size 4 --length_penalty 0.8 --baselines

The task is the registered `gemma_en_de_libreoffice` (same prompt, template, BLEU) over another
file; nothing in it is specific to this project beyond the public builders.
"""
import os

import seqio

from gemma_tasks import builders, preprocessors, sources

TASK = "libreoffice_heldout_en_de"
PATH_VARIABLE = "LIBREOFFICE_HELDOUT"


def register(path: str) -> seqio.Task:
  """Adds `TASK` (its test split is the jsonl.gz of {id, en, de} pairs at `path`)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{PATH_VARIABLE}={path}: no such file (make it with "
                            "tools/extract_help_pairs.py, see README)")
  seqio.TaskRegistry.remove(TASK)
  return builders.add_translation_task(
      TASK, sources.JsonlDataSource({"test": path}, fields={"en": str, "de": str}),
      source_key="en", target_key="de", prefix=preprocessors.TRANSLATE_PREFIX)


if not os.environ.get(PATH_VARIABLE):
  raise RuntimeError(f"demo.heldout_help: set {PATH_VARIABLE} to the pairs file written by "
                     "tools/extract_help_pairs.py")
register(os.environ[PATH_VARIABLE])
