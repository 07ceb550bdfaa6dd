"""Fused per-example maps: the same examples, in the same order, as seqio's own pipeline."""
import numpy as np
import seqio

import feature_converters as fc
import gemma_tasks  # noqa: F401  (registers the tasks)

TASK = "gemma_en_de_libreoffice"
LENGTHS = {"inputs": 24, "targets": 24}   # short: seqio's trim map cuts most examples


def _fusion(ds) -> bool:
  return bool(ds.options().experimental_optimization.map_fusion)


def test_registered_task_fuses_its_maps_and_gives_seqios_examples():
  task = seqio.get_mixture_or_task(TASK)
  # The same parts in a plain seqio.Task: seqio's pipeline, each map its own stage.
  plain = seqio.Task(f"{TASK}_plain_copy", source=task.source,
                     output_features=task.output_features, preprocessors=task.preprocessors)
  ours = task.get_dataset(LENGTHS, "validation", shuffle=False)
  theirs = plain.get_dataset(LENGTHS, "validation", shuffle=False)
  assert _fusion(ours) and not _fusion(theirs)
  assert ours.element_spec == theirs.element_spec
  ours, theirs = list(ours.as_numpy_iterator()), list(theirs.as_numpy_iterator())
  assert len(ours) == len(theirs) == task.num_input_examples("validation")
  for a, b in zip(ours, theirs):
    assert list(a) == list(b)
    for key in a:
      assert np.array_equal(a[key], b[key]), key
  trimmed = sum(len(ex["inputs"]) == LENGTHS["inputs"] for ex in ours)
  assert trimmed > len(ours) // 2   # the trim map ran inside the fused stage


def test_our_converter_fuses_the_maps_of_a_plain_seqio_task():
  task = seqio.get_mixture_or_task(TASK)
  plain = seqio.Task(f"{TASK}_plain_copy", source=task.source,
                     output_features=task.output_features, preprocessors=task.preprocessors)
  converter = fc.GemmaPrefixLMFeatureConverter(pack=True)
  unfused = plain.get_dataset(LENGTHS, "validation", shuffle=False)
  ds = converter(unfused, LENGTHS)
  assert _fusion(ds)
  reference = seqio.PrefixLMFeatureConverter(pack=True, bos_id=2)(unfused, LENGTHS)
  ours, theirs = list(ds.as_numpy_iterator()), list(reference.as_numpy_iterator())
  assert len(ours) == len(theirs) > 0
  for a, b in zip(ours, theirs):
    for key in b:
      assert np.array_equal(a[key], b[key]), key
