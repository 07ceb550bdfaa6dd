"""The checked cache path for tasks that are not ours: nothing unless asked, everything when asked."""
import pytest
import tensorflow as tf

from cache_scripts import cache_tasks
from dataset_asserts import per_example_maps_on_threads
from gemma_tasks import cached

PLAIN = "gemma_test_plain_seqio_quiz"
PLAIN_MIX = "gemma_test_plain_seqio_quiz_mix"
LENGTHS = {"inputs": 512, "targets": 512}


def _register_plain(*, prefix=""):
  """The real quiz QA task, registered the plain seqio way (no task_cls)."""
  import seqio
  from gemma_tasks import builders, preprocessors, sources
  for registry in (seqio.MixtureRegistry, seqio.TaskRegistry):
    registry.remove(PLAIN_MIX)
    registry.remove(PLAIN)

  def qa(dataset):
    dataset = dataset.map(lambda ex: {**ex, "question": prefix + ex["question"]})
    return preprocessors.qa(dataset)

  return seqio.TaskRegistry.add(
      PLAIN, source=sources.embedded("quiz_qa", ("validation",),
                                     fields={"question": str, "answers": list}),
      preprocessors=[qa, *builders._tail(add_eos=False)], output_features=builders.output_features())


@pytest.fixture
def plain_cached(tmp_path, temp_task_names, global_cache_dirs):
  import seqio
  temp_task_names += [PLAIN, PLAIN_MIX]
  _register_plain()
  report = cache_tasks.cache_tasks([PLAIN], str(tmp_path), min_shards=1, spot_check_examples=0)
  assert report.ok, report.summary()
  seqio.add_global_cache_dirs([str(tmp_path)])
  return tmp_path


def test_plain_task_without_cache_gets_seqios_own_error(tmp_path, temp_task_names,
                                                        global_cache_dirs):
  import seqio
  temp_task_names.append(PLAIN)
  task = _register_plain()
  assert type(task) is seqio.Task  # pylint: disable=unidiomatic-typecheck
  seqio.utils.set_global_cache_dirs([str(tmp_path)])
  with pytest.raises(AssertionError) as err:
    task.get_dataset(LENGTHS, "validation", use_cached=True)
  assert not isinstance(err.value, cached.CacheNotFoundError)
  assert "does not exist in any of the task cache directories" in str(err.value)
  # Asked for: the named error.
  with pytest.raises(cached.CacheNotFoundError, match="add_global_cache_dirs|" + str(tmp_path)):
    cached.checked_dataset(PLAIN, LENGTHS, "validation")


def test_checked_dataset_reads_a_plain_task_with_the_fast_reader(plain_cached):
  import seqio
  task = seqio.get_mixture_or_task(PLAIN)
  before = {k: id(v) for k, v in vars(task).items()}
  stats_before = dict(task._stats)  # pylint: disable=protected-access
  checked = cached.checked_dataset(PLAIN, LENGTHS, "validation", shuffle=False)
  assert checked.options().experimental_optimization.map_fusion   # and seqio's is not
  ours = [ex["targets"].tolist() for ex in checked.as_numpy_iterator()]
  # The user's task object is what it was: same class, same attributes.
  assert type(task) is seqio.Task  # pylint: disable=unidiomatic-typecheck
  assert {k: id(v) for k, v in vars(task).items()} == before
  assert task._stats == stats_before  # pylint: disable=protected-access
  theirs = [ex["targets"].tolist() for ex in task.get_dataset(
      LENGTHS, "validation", use_cached=True, shuffle=False).as_numpy_iterator()]
  assert len(ours) == 108 and ours == theirs
  # Our reader and trim run in the pulling thread; seqio's reader hands off each example.
  assert per_example_maps_on_threads(checked) == []
  assert per_example_maps_on_threads(task.get_dataset(LENGTHS, "validation", use_cached=True))
  assert isinstance(cached.cached_source(task, "validation"), cached.FastCachedDataSource)


def test_checked_dataset_refuses_a_stale_cache_of_a_plain_task_and_mixture(plain_cached):
  import seqio
  _register_plain(prefix="Quiz: ")  # same name, other preprocessor: the cache is stale
  seqio.MixtureRegistry.add(PLAIN_MIX, [(PLAIN, 1.0)])
  # Not asked for: seqio reads the stale cache as it always did.
  n = sum(1 for _ in seqio.get_mixture_or_task(PLAIN).get_dataset(
      LENGTHS, "validation", use_cached=True, shuffle=False))
  assert n == 108
  with pytest.raises(cached.CacheFingerprintError, match=r"changed: preprocessor\[0\]"):
    cached.checked_dataset(PLAIN, LENGTHS, "validation")
  with pytest.raises(cached.CacheFingerprintError, match=r"changed: preprocessor\[0\]"):
    cached.checked_dataset(seqio.get_mixture_or_task(PLAIN_MIX), LENGTHS, "validation")
  with pytest.raises(cached.CacheFingerprintError):
    cached.check_cache(seqio.get_mixture_or_task(PLAIN), "validation")


def test_checked_dataset_of_a_mixture_reads_every_task(plain_cached):
  import seqio
  seqio.MixtureRegistry.add(PLAIN_MIX, [(PLAIN, 1.0)])
  ds = cached.checked_dataset(PLAIN_MIX, LENGTHS, "validation", shuffle=False, num_epochs=1)
  assert sum(1 for _ in ds.as_numpy_iterator()) == 108
  assert isinstance(ds, tf.data.Dataset)


def test_trainer_reads_any_task_through_the_checks(tmp_path, temp_task_names, global_cache_dirs):
  """model.runner.train's input (`--use_cached`) asks for the checks, also for a user's task
  registered the plain seqio way (e.g. from --module_imports)."""
  import seqio
  from model.runner import inputs
  temp_task_names.append(PLAIN)
  _register_plain()
  seqio.utils.set_global_cache_dirs([str(tmp_path)])
  with pytest.raises(cached.CacheNotFoundError, match=str(tmp_path)):
    inputs.train_batches(PLAIN, {"inputs": 64, "targets": 32}, batch_size=2, seed=0,
                         use_cached=True, split="validation")


def test_cached_lm_task_is_cut_on_the_readers_batches(tmp_path, temp_task_names, global_cache_dirs):
  """An LM task read from its cache: the same chunks as on the fly, cut on the batches the
  reader parsed (no regroup, no per-example map on a thread pool)."""
  import seqio
  from gemma_tasks import builders, sources
  name = "gemma_test_cached_python_docs"
  temp_task_names.append(name)
  seqio.TaskRegistry.remove(name)
  task = builders.add_lm_task(name, sources.embedded("python_docs", ("validation",),
                                                     fields={"text": str}))
  report = cache_tasks.cache_tasks([name], str(tmp_path), min_shards=1, spot_check_examples=0)
  assert report.ok, report.summary()
  seqio.add_global_cache_dirs([str(tmp_path)])
  lengths = {"inputs": 0, "targets": 64}

  def chunks(ds):   # the cache job writes documents in its own order: compare the sets
    out = [(ex["inputs"].shape, ex["targets"].dtype, tuple(ex["targets"]))
           for ex in ds.as_numpy_iterator()]
    return sorted(out, key=lambda c: c[2])

  on_the_fly = chunks(task.get_dataset(lengths, "validation", shuffle=False))
  assert len(on_the_fly) > task.num_input_examples("validation")
  assert isinstance(cached.cached_source(task, "validation"), cached.FastCachedDataSource)
  # seqio keeps a split this small in memory (a `cache` between reader and chunking); without
  # it the chunking works on the parsed batches themselves.
  for in_memory in (True, False):
    from_cache = task.get_dataset(lengths, "validation", shuffle=False, use_cached=True,
                                  try_in_mem_cache=in_memory)
    assert chunks(from_cache) == on_the_fly, in_memory
  assert per_example_maps_on_threads(from_cache) == []
