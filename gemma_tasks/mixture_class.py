"""`GemmaMixture`: a `seqio.Mixture` whose per-task feature filter runs in the pulling thread.

seqio's `Mixture.get_task_dataset` keeps each task's output features with a parallel `map` per
example; on a small machine the hand-off to its threads costs more than the work
(`feature_converters.pipeline_options`). Here the same filter is an inline map: the same
examples, in the same order. The registered mixtures use this class
(`seqio.MixtureRegistry.add(..., mixture_cls=GemmaMixture)`, seqio's own extension point).

>>> import gemma_tasks
>>> mix = seqio.get_mixture_or_task("gemma_qa_mix")
>>> type(mix).__name__
'GemmaMixture'
>>> lengths = {"inputs": 64, "targets": 16}
>>> task = mix.tasks[0]                   # a task's examples carry more than the model needs
>>> sorted(next(task.get_dataset(lengths, "validation", shuffle=False).as_numpy_iterator()))
['answers', 'group', 'inputs', 'inputs_pretokenized', 'question', 'targets', 'targets_pretokenized']
>>> ex = next(mix.get_dataset(lengths, "validation", shuffle=False, seed=0).as_numpy_iterator())
>>> sorted(ex)                            # the mixture keeps its output features
['inputs', 'targets']
"""
from __future__ import annotations

from typing import Mapping, Optional, Set

import seqio
import tensorflow as tf

from feature_converters import pipeline_options


class GemmaMixture(seqio.Mixture):
  """`seqio.Mixture`, its per-task filter (`get_task_dataset`) run inline."""

  def get_task_dataset(self, task: seqio.Task, output_feature_keys: Set[str],
                       sequence_length: Optional[Mapping[str, int]] = None,
                       split: str = "train", use_cached: bool = False, shuffle: bool = True,
                       seed: Optional[int] = None, shard_info: Optional[seqio.ShardInfo] = None,
                       num_epochs: Optional[int] = None, trim_output_features: bool = True,
                       try_in_mem_cache: bool = True) -> tf.data.Dataset:
    keep = frozenset(output_feature_keys)
    ds = task.get_dataset(
        sequence_length=sequence_length, split=split, use_cached=use_cached, shuffle=shuffle,
        seed=seed, shard_info=shard_info, num_epochs=num_epochs,
        trim_output_features=trim_output_features, try_in_mem_cache=try_in_mem_cache)
    return pipeline_options.inline_map(ds, lambda ex: {k: v for k, v in ex.items() if k in keep})
