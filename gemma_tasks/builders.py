"""One-call helpers to register Gemma-formatted tasks (for the built-in ones and for users).

    import seqio, gemma_tasks
    from gemma_tasks import builders, sources

    builders.add_translation_task(
        "my_en_de",
        sources.JsonlDataSource({"train": "/data/train-*.jsonl.gz", "test": "/data/test.jsonl"},
                                fields={"en": str, "de": str}),
        source_key="en", target_key="de", prefix="Translate English to German: ")
    seqio.get_dataset("my_en_de", {"inputs": 128, "targets": 128}, split="test",
                      feature_converter=feature_converters.GemmaPrefixLMFeatureConverter(pack=True))

Every task built here runs: format as Gemma turns -> tokenize (Gemma vocabulary) ->
`seqio.CacheDatasetPlaceholder` -> (length-dependent steps: append EOS after trimming when
`add_eos=True`). The steps before the placeholder run once per batch of examples
(`gemma_tasks.batched`) and yield what seqio's per-example steps yield.
`inputs` never carries BOS: the feature converters put exactly one BOS (2) at each sequence start.
The tasks are `gemma_tasks.cached.CheckedCacheTask`s: `use_cached=True` checks the cache
(missing, damaged, written for another version of the task) and reads it with the batched parse.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Sequence

import seqio

from gemma_tasks import cached
from gemma_tasks import metrics as metrics_lib
from gemma_tasks import postprocessors, preprocessors, tokenization
from gemma_tasks.vocab import get_vocabulary


def output_features(vocabulary: Optional[seqio.Vocabulary] = None, *, add_eos: bool = False,
                    inputs_required: bool = True) -> Mapping[str, seqio.Feature]:
  """`inputs` (no EOS: it ends with `<start_of_turn>model\\n`) and `targets` (EOS if asked)."""
  vocabulary = vocabulary or get_vocabulary()
  return {
      "inputs": seqio.Feature(vocabulary, add_eos=False, required=inputs_required),
      "targets": seqio.Feature(vocabulary, add_eos=add_eos),
  }


def _tail(add_eos: bool):
  # Tokenize, then the cache boundary, then everything that depends on sequence lengths.
  # Without EOS, seqio's append_eos_after_trim would be a per-example map that changes nothing.
  return [tokenization.tokenize, seqio.CacheDatasetPlaceholder(),
          *([seqio.preprocessors.append_eos_after_trim] if add_eos else [])]


def add_translation_task(
    name: str, source: seqio.DataSource, *, source_key: str, target_key: str, prefix: str,
    vocabulary: Optional[seqio.Vocabulary] = None, add_eos: bool = False,
    metric_fns: Sequence[Callable] = (metrics_lib.bleu,)) -> seqio.Task:
  """Registers `name`: {source_key, target_key} -> Gemma turns, evaluated with BLEU."""
  return seqio.TaskRegistry.add(
      name, task_cls=cached.CheckedCacheTask, source=source,
      preprocessors=[functools.partial(preprocessors.translation, source_key=source_key,
                                       target_key=target_key, prefix=prefix), *_tail(add_eos)],
      output_features=output_features(vocabulary, add_eos=add_eos),
      postprocess_fn=postprocessors.strip_template, metric_fns=list(metric_fns))


def add_qa_task(
    name: str, source: seqio.DataSource, *, question_key: str = "question",
    answers_key: str = "answers", vocabulary: Optional[seqio.Vocabulary] = None,
    add_eos: bool = False, preprocessor: Optional[Callable] = None,
    group_key: Optional[str] = None,
    metric_fns: Optional[Sequence[Callable]] = None) -> seqio.Task:
  """Registers `name`: {question, answers[]} -> Gemma turns, exact match over all aliases.

  With `group_key` (a source feature such as the quiz's `src`), exact match is also reported
  per group (`metrics.exact_match_by_group`).
  """
  pre = preprocessor or functools.partial(preprocessors.qa, question_key=question_key,
                                          answers_key=answers_key, group_key=group_key)
  if group_key:
    post, default_metrics = postprocessors.qa_answers_by_group, [metrics_lib.exact_match_by_group]
  else:
    post, default_metrics = postprocessors.qa_answers, [metrics_lib.exact_match]
  return seqio.TaskRegistry.add(
      name, task_cls=cached.CheckedCacheTask, source=source, preprocessors=[pre, *_tail(add_eos)],
      output_features=output_features(vocabulary, add_eos=add_eos), postprocess_fn=post,
      metric_fns=list(default_metrics if metric_fns is None else metric_fns))


def add_lm_task(
    name: str, source: seqio.DataSource, *, text_key: str = "text",
    vocabulary: Optional[seqio.Vocabulary] = None, add_eos: bool = True) -> seqio.Task:
  """Registers `name`: raw prose -> `targets` chunks of `sequence_length['targets']` tokens.

  `inputs` is empty, so the task mixes with the chat tasks and a PrefixLM converter treats it
  as plain language modelling. EOS marks the end of each document before chunking.
  """
  return seqio.TaskRegistry.add(
      name, task_cls=cached.CheckedCacheTask, source=source,
      preprocessors=[functools.partial(preprocessors.lm_text, text_key=text_key),
                     tokenization.tokenize, seqio.CacheDatasetPlaceholder(),
                     preprocessors.append_eos_and_chunk_targets],
      output_features=output_features(vocabulary, add_eos=add_eos, inputs_required=False),
      metric_fns=[])
