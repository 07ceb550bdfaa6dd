"""Per-example maps fused and run inline: the same examples, in the same order, as seqio's."""
import numpy as np
import seqio
import tensorflow as tf

import feature_converters as fc
import gemma_tasks  # noqa: F401  (registers the tasks)
from dataset_asserts import (as_arrays, assert_same, assert_same_examples,
                             per_example_maps_on_threads)
from feature_converters import pipeline_options
from gemma_tasks import cached

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


def test_registered_task_runs_no_per_example_map_on_a_thread_pool():
  task = seqio.get_mixture_or_task(TASK)
  # validation is small enough for seqio's in-memory cache, which sits between the source's
  # batches and the task's batched steps.
  for split in ("train", "validation"):
    ours = task.get_dataset(LENGTHS, split, shuffle=False)
    assert per_example_maps_on_threads(ours) == [], split
    converted = fc.GemmaPrefixLMFeatureConverter(pack=True)(ours, LENGTHS)
    assert per_example_maps_on_threads(converted) == [], split
  # The check sees seqio's own trim map in the plain pipeline.
  plain = _plain_copy(task).get_dataset(LENGTHS, "train", shuffle=False)
  assert len(per_example_maps_on_threads(plain)) == 1


def test_inline_map_gives_the_maps_elements():
  ds = tf.data.Dataset.from_tensor_slices({"a": [[1, 2, 3], [4, 5, 6]], "b": [7, 8]})
  fn = lambda ex: {"a": ex["a"][:2], "b": ex["b"] * 2}
  ours = pipeline_options.inline_map(ds, fn)
  assert pipeline_options.runs_inline(ours) and not pipeline_options.runs_inline(ds.map(fn))
  assert assert_same_examples(ours, ds.map(fn)) == 2
  assert per_example_maps_on_threads(ours) == []
  assert len(per_example_maps_on_threads(ds.map(fn))) == 1


def test_trim_features_cuts_what_seqios_trim_cuts():
  vocab = seqio.PassThroughVocabulary(size=100)
  features = {"inputs": seqio.Feature(vocab), "grid": seqio.Feature(vocab, rank=2),
              "targets": seqio.Feature(vocab)}
  ex = {"inputs": tf.range(6), "grid": tf.reshape(tf.range(12), [3, 4]),
        "targets": tf.range(5), "other": tf.range(9), "inputs_pretokenized": tf.constant("x")}
  ds = tf.data.Dataset.from_tensors(ex)
  for lengths in ({"inputs": 4, "grid": (2, 3), "targets": None, "other": 2},
                  {"inputs": 10, "grid": 1}, {}, None):
    expected = seqio.utils.trim_dataset(ds, lengths, features)
    ours = ds.map(lambda e, n=lengths: cached.trim_features(e, n, features))
    assert assert_same_examples(ours, expected) == 1, lengths
  out = cached.trim_features(ex, {"inputs": 4, "grid": (2, 3)}, features)
  np.testing.assert_array_equal(out["grid"], [[0, 1, 2], [4, 5, 6]])
  np.testing.assert_array_equal(out["other"], np.arange(9))


def test_registered_mixture_filters_inline_and_gives_seqios_examples(temp_task_names):
  mix = seqio.get_mixture_or_task("gemma_qa_mix")
  temp_task_names.append("gemma_test_plain_qa_mix")
  seqio.MixtureRegistry.remove("gemma_test_plain_qa_mix")
  plain = seqio.MixtureRegistry.add("gemma_test_plain_qa_mix",
                                    [(t.name, mix.get_rate(t)) for t in mix.tasks])
  assert type(plain) is seqio.Mixture  # pylint: disable=unidiomatic-typecheck
  lengths = {"inputs": 64, "targets": 16}
  ours = mix.get_dataset(lengths, "validation", shuffle=False, seed=0).take(300)
  theirs = plain.get_dataset(lengths, "validation", shuffle=False, seed=0).take(300)
  assert assert_same_examples(ours, theirs) == 300
  # One filter map per task fewer on the thread pools.
  assert (len(per_example_maps_on_threads(theirs)) - len(per_example_maps_on_threads(ours))
          == len(mix.tasks))
