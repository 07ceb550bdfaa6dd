"""The registered tasks' batched steps give exactly what per-example seqio steps give.

The reference (`benchmarks/per_example_steps.py`) is the per-example pipeline a seqio user would
write (a map per example, `seqio.preprocessors.tokenize`): our tasks, which run their string ops and
SentencePiece once per batch, must yield the same examples, in the same order, with the same
element spec, on the embedded data.
"""
import pytest
import seqio
import tensorflow as tf

import gemma_tasks  # noqa: F401  (registers the tasks)
from benchmarks import per_example_steps
from dataset_asserts import assert_same_examples, per_example_maps_on_threads
from gemma_tasks import aliases, batched, builders, tokenization


SPLIT = {"gemma_en_de_gettext": "train", "gemma_en_de_libreoffice_ui": "train", "gemma_quiz_qa": "train",
         "gemma_lm_python_docs": "train"}


@pytest.mark.parametrize("name", sorted(per_example_steps.PRECACHE))
def test_registered_task_equals_per_example_seqio_steps(name, temp_task_names):
  split = SPLIT.get(name, "test")
  temp_task_names.append(f"{name}_per_example")
  tasks = (seqio.get_mixture_or_task(name),
           per_example_steps.register_like(name, temp_task_names[-1]))
  # Everything before the cache placeholder: what a cache holds and what the steps changed.
  # The first 1,000 rows of the split: several batches, and a partial last batch.
  ours, ref = (t.preprocess_precache(t.source.get_dataset(split, shuffle=False).take(1000))
               for t in tasks)
  n = assert_same_examples(ours, ref)
  assert n > 2 * batched.BATCH_SIZE


@pytest.mark.parametrize("name", sorted(per_example_steps.POSTCACHE))
@pytest.mark.parametrize("targets", [1, 7, 512])
def test_registered_task_after_the_cache_equals_per_example_steps(name, targets, temp_task_names):
  # The whole task (append EOS, cut into chunks, seqio's trim): the chunks of 618 documents,
  # a document cut in one piece or hundreds, across several batches of documents.
  temp_task_names.append(f"{name}_per_example")
  tasks = (seqio.get_mixture_or_task(name),
           per_example_steps.register_like(name, temp_task_names[-1]))
  lengths = {"inputs": 0, "targets": targets}
  ours, ref = (t.get_dataset(lengths, "validation", shuffle=False) for t in tasks)
  n, docs = assert_same_examples(ours, ref), tasks[0].num_input_examples("validation")
  assert n == docs if targets == 512 else n > docs   # 512: every document in one chunk
  # The per-example reference hands each document to a thread pool; ours runs no such map.
  assert per_example_maps_on_threads(ours) == [] and per_example_maps_on_threads(ref)


def test_tokenize_equals_seqio_tokenize_across_batch_edges():
  rows = ["", "Hi", "Grüße 😀", "<start_of_turn>user\nx<end_of_turn>\n", "a " * 300] * 120
  ds = tf.data.Dataset.from_tensor_slices({"inputs": rows, "targets": rows[::-1], "id": range(600)})
  features = builders.output_features()
  assert_same_examples(tokenization.tokenize(ds, features), seqio.preprocessors.tokenize(ds, features))


def test_tokenize_falls_back_to_seqio_for_non_scalar_strings():
  ds = tf.data.Dataset.from_tensors({"inputs": ["a", "b"], "targets": "c"})
  features = builders.output_features()
  ours = tokenization.tokenize(ds, features)
  ref = seqio.preprocessors.tokenize(ds, features)
  assert ours.element_spec == ref.element_spec
  assert [x.tolist() for x in next(ours.as_numpy_iterator())["inputs"]] == [
      x.tolist() for x in next(ref.as_numpy_iterator())["inputs"]]


def test_over_batches_keeps_order_shapes_and_empty_batches():
  ds = tf.data.Dataset.from_tensor_slices(
      {"n": tf.range(10), "v": tf.ragged.constant([[i] * (i % 3) for i in range(10)])})
  ds = ds.map(lambda ex: {"n": ex["n"], "v": ex["v"]})  # v: a dense [None] vector per example

  def drop_first_four(batch):  # drops whole batches (the first two of size 2)
    keep = batch["n"] >= 4
    return {"n": tf.boolean_mask(batch["n"], keep), "v": tf.ragged.boolean_mask(batch["v"], keep)}

  out = batched.over_batches(ds, drop_first_four, batch_size=2)
  assert out.element_spec == ds.element_spec
  assert [(ex["n"], ex["v"].tolist()) for ex in out.as_numpy_iterator()] == [
      (i, [i] * (i % 3)) for i in range(4, 10)]


def test_over_batches_regroups_only_the_features_it_reads():
  ds = tf.data.Dataset.from_tensor_slices(
      {"t": ["a", "bb", "ccc"], "extra": tf.ragged.constant([[1], [], [2, 3]])})
  length = lambda batch: {"n": tf.strings.length(batch["t"])}
  out = batched.over_batches(ds, length, batch_size=2, reads=("t",))
  assert [ex["n"] for ex in out.as_numpy_iterator()] == [1, 2, 3]
  # Only `t` is grouped: a plain `batch`, where the ragged `extra` would take `ragged_batch`
  # and its per-example encoding map on a thread pool.
  assert per_example_maps_on_threads(out) == []
  assert per_example_maps_on_threads(batched.over_batches(ds, length, batch_size=2))


def test_user_task_with_seqio_preprocessors_works_beside_ours(temp_task_names):
  name = "user_en_de_with_seqio_steps"
  temp_task_names.append(name)
  registered = seqio.get_mixture_or_task("gemma_en_de_libreoffice")
  seqio.TaskRegistry.add(
      name, source=registered.source,
      preprocessors=[per_example_steps.translate_en_de, seqio.preprocessors.tokenize,
                     seqio.CacheDatasetPlaceholder()],
      output_features=registered.output_features, metric_fns=[])
  lengths = {"inputs": 64, "targets": 64}
  converter = seqio.PrefixLMFeatureConverter(pack=True, bos_id=2)
  user = seqio.get_dataset(name, lengths, dataset_split="test", shuffle=False,
                           feature_converter=converter)
  ours = seqio.get_dataset("gemma_en_de_libreoffice", lengths, dataset_split="test",
                           shuffle=False, feature_converter=converter)
  assert assert_same_examples(ours, user) > 100


def test_tokenize_keeps_seqio_key_order():
  # The order of a cached record's features follows the dict: same order, same bytes.
  ds = tf.data.Dataset.from_tensor_slices({"id": [1, 2], "inputs": ["a", "b"], "targets": ["c", "d"]})
  features = builders.output_features()
  ours = next(tokenization.tokenize(ds, features).as_numpy_iterator())
  ref = next(seqio.preprocessors.tokenize(ds, features).as_numpy_iterator())
  assert list(ours) == list(ref)


def test_second_step_works_on_the_first_steps_groups():
  """Two batched steps in a row share their groups; a copy of the first's output (here a map)
  is grouped again."""
  ds = tf.data.Dataset.from_tensor_slices({"x": list(range(6))})

  def drop_first(batch):   # groups of 3 come out as groups of 2
    return {"x": batch["x"][1:]}

  def group_size(batch):
    return {"x": batch["x"], "group": tf.fill(tf.shape(batch["x"]), tf.shape(batch["x"])[0])}

  first = batched.over_batches(ds, drop_first, batch_size=3)
  expected = [{"x": 1, "group": 2}, {"x": 2, "group": 2}, {"x": 4, "group": 2}, {"x": 5, "group": 2}]
  assert list(batched.over_batches(first, group_size).as_numpy_iterator()) == expected
  copy = first.map(lambda ex: ex)
  assert [ex["group"] for ex in batched.over_batches(copy, group_size).as_numpy_iterator()] == [4] * 4


def test_pick_aliases_names_an_empty_list():
  with pytest.raises(ValueError, match="alias list 1 is empty"):
    aliases.pick_aliases([["a"], [], ["b"]])


def test_pick_alias_equals_the_plain_pairwise_definition():
  import gzip, json, os  # noqa: E401,PLC0415
  from gemma_tasks import sources  # noqa: PLC0415
  lists = []
  for name in [f"{data}.{split}" for data in ("quiz_qa", "trivia_qa_open")
               for split in ("train", "validation", "test")]:
    with gzip.open(os.path.join(sources.DATA_DIR, f"{name}.jsonl.gz"), "rt") as f:
      lists += [json.loads(line)["answers"] for line in f]
  lists = [a for a in lists if a] + [["", ""], ["x", ""], ["(a)", "(b)"], ["The", "a", "An"],
                                     ["b b", "b", "b c"], ["a b", "b a", "ab"]]
  assert len(lists) > 20_000
  assert max(len(a) for a in lists) > 300  # long TriviaQA alias lists are in there
  plain = [per_example_steps.pick_alias(answers) for answers in lists]
  # All lists in one call, as the task's batches are scored (lists of equal length together) ...
  assert aliases.pick_aliases(lists) == plain
  # ... and one at a time.
  for answers, expected in zip(lists, plain):
    assert aliases.pick_alias(answers) == expected, answers
