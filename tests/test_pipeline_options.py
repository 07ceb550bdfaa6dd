"""Fused per-example maps: the same examples, in the same order, as seqio's own pipeline."""
import seqio

import feature_converters as fc
import gemma_tasks  # noqa: F401  (registers the tasks)
from dataset_asserts import as_arrays, assert_same, assert_same_examples

TASK = "gemma_en_de_libreoffice"
LENGTHS = {"inputs": 24, "targets": 24}   # short: seqio's trim map cuts most examples


def _fusion(ds) -> bool:
  return bool(ds.options().experimental_optimization.map_fusion)


def _plain_copy(task: seqio.Task) -> seqio.Task:
  """The same parts in a plain seqio.Task: seqio's pipeline, each map its own stage."""
  return seqio.Task(f"{task.name}_plain_copy", source=task.source,
                    output_features=task.output_features, preprocessors=task.preprocessors)


def test_registered_task_fuses_its_maps_and_gives_seqios_examples():
  task = seqio.get_mixture_or_task(TASK)
  ours = task.get_dataset(LENGTHS, "validation", shuffle=False)
  theirs = _plain_copy(task).get_dataset(LENGTHS, "validation", shuffle=False)
  assert _fusion(ours) and not _fusion(theirs)
  assert assert_same_examples(ours, theirs) == task.num_input_examples("validation")
  trimmed = sum(len(ex["inputs"]) == LENGTHS["inputs"] for ex in ours.as_numpy_iterator())
  assert trimmed > task.num_input_examples("validation") // 2   # the trim ran in the fused stage


def test_our_converter_fuses_the_maps_of_a_plain_seqio_task():
  unfused = _plain_copy(seqio.get_mixture_or_task(TASK)).get_dataset(
      LENGTHS, "validation", shuffle=False)
  ours = fc.GemmaPrefixLMFeatureConverter(pack=True)(unfused, LENGTHS)
  assert _fusion(ours)
  reference = as_arrays(seqio.PrefixLMFeatureConverter(pack=True, bos_id=2)(unfused, LENGTHS))
  assert reference   # packed rows to compare
  assert_same(as_arrays(ours), reference)
