"""Fingerprints of what a cached Task depends on: vocabulary, output features, source, preprocessors.

A cache holds the output of every preprocessor before `seqio.CacheDatasetPlaceholder`. If the
vocabulary file, a preprocessor, the source data or the output features change after the cache
was written, `use_cached=True` would silently train on stale tokens. So the cache job stores a
fingerprint of each of these parts in the cache metadata, and the loader compares it with the
fingerprint of the Task as registered now (see `gemma_tasks.cached`).

>>> import gemma_tasks, seqio
>>> fp = task_fingerprint(seqio.get_mixture_or_task("gemma_quiz_qa"))
>>> sorted(fp["components"])
['fingerprint_version', 'output_features', 'preprocessor[0]:gemma_tasks.preprocessors.qa',
 'preprocessor[1]:gemma_tasks.tokenization.tokenize', 'source', 'vocabulary[inputs]',
 'vocabulary[targets]']
>>> len(fp["fingerprint"])
64
>>> diff_components(fp["components"], {**fp["components"], "vocabulary[targets]": "00"})
['vocabulary[targets]']

What each component covers (and what it does not):
  * `vocabulary[<feature>]`: the vocabulary class and the bytes of its model (for SentencePiece,
    the serialized model proto, so the same file at another path gives the same value).
  * `output_features`: name, dtype, rank, add_eos and required of every output feature.
  * `source`: the source class and, per split, the shard file names with a SHA-256 of their
    content when they are local files (the embedded data); remote or missing files are
    recorded by name only (hashing terabytes of GCS data at load time is not an option).
  * `preprocessor[i]:<name>`: every preprocessor before the cache placeholder, with its
    `functools.partial` arguments and the source code of the function and of the functions and
    constants it references in its own top-level package (so a changed `template.py` constant
    used by a preprocessor changes the fingerprint). Code reached through other packages'
    objects, data read from files inside a preprocessor, and random seeds are not covered.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import re
import types
from typing import Any, Dict, List, Mapping

# Bump when the way components are computed changes: old caches then report a clear mismatch.
FINGERPRINT_VERSION = 1

# Files larger than this are recorded by name and size only.
_MAX_HASHED_FILE_BYTES = 256 * 1024 * 1024
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1024)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
  # Keyed on (size, mtime) so repeated loads in one process hash each file once.
  del size, mtime_ns
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def describe_file(path: str) -> str:
  """Content-based description of a data file, independent of the directory it lives in.

  >>> describe_file("/nonexistent/train-00000.jsonl.gz")
  'train-00000.jsonl.gz'
  """
  name = os.path.basename(str(path))
  try:
    st = os.stat(path)
  except (OSError, ValueError):
    return name
  if st.st_size > _MAX_HASHED_FILE_BYTES:
    return f"{name} size={st.st_size}"
  return f"{name} sha256={_file_digest(path, st.st_size, st.st_mtime_ns)}"


def _top_package(module_name: str) -> str:
  return (module_name or "").split(".")[0]


def _code_objects(code: types.CodeType):
  yield code
  for const in code.co_consts:
    if isinstance(const, types.CodeType):
      yield from _code_objects(const)


def _function_source(fn: Any) -> str:
  try:
    return inspect.getsource(fn)
  except (OSError, TypeError):
    pass
  code = getattr(fn, "__code__", None)
  if isinstance(code, types.CodeType):
    # No source file (e.g. defined in a REPL): the bytecode is the next best thing.
    return repr(code.co_code)
  return _ADDRESS.sub("", repr(fn))


def _function_closure(fn: types.FunctionType) -> List[str]:
  """Source of `fn` plus the functions/constants of its own package that it references.

  >>> def f(x): return x + 1
  >>> _function_closure(f)[0].startswith("def f(x)")
  True
  """
  package = _top_package(fn.__module__)
  seen = set()
  parts = []

  def visit(f):
    if id(f) in seen:
      return
    seen.add(id(f))
    parts.append(_function_source(f))
    names = set()
    for code in _code_objects(f.__code__):
      names.update(code.co_names)
    g = getattr(f, "__globals__", {})
    candidates = [g[n] for n in sorted(names) if n in g]
    # `module.attr` references: co_names holds both the module and the attribute names.
    for mod in [c for c in candidates if isinstance(c, types.ModuleType)]:
      if _top_package(mod.__name__) == package:
        candidates += [getattr(mod, n) for n in sorted(names) if hasattr(mod, n)]
    for c in candidates:
      if isinstance(c, (str, int, float, bool, bytes, tuple)) and not isinstance(c, type):
        parts.append(repr(c))
      elif isinstance(c, types.FunctionType) and _top_package(c.__module__) == package:
        visit(c)
    for cell in (f.__closure__ or ()):
      try:
        value = cell.cell_contents
      except ValueError:
        continue
      if isinstance(value, types.FunctionType):
        visit(value)
      else:
        parts.append(describe(value, 1))

  visit(fn)
  return parts


_MAX_DEPTH = 8


def describe(obj: Any, _depth: int = 0) -> str:
  """A deterministic text describing `obj` for hashing (no memory addresses, no paths).

  >>> describe(functools.partial(max, 1, key=None))
  'partial(builtin:max, args=[1], kwargs={key: None})'
  >>> describe({"b": 1, "a": [1.5, "x"]})
  "{a: [1.5, 'x'], b: 1}"
  """
  # Imported lazily: this module is imported by light code paths too.
  import seqio  # pylint: disable=g-import-not-at-top

  if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
    return repr(obj)
  if isinstance(obj, types.ModuleType):
    return f"module {obj.__name__}"
  if _depth > _MAX_DEPTH:
    # Deep object graphs (datasets, registries, cycles): the type is all we hash.
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"
  d = _depth + 1
  if isinstance(obj, (list, tuple)):
    return "[" + ", ".join(describe(x, d) for x in obj) + "]"
  if isinstance(obj, Mapping):
    return "{" + ", ".join(f"{k}: {describe(v, d)}" for k, v in sorted(obj.items(), key=str)) + "}"
  if isinstance(obj, (set, frozenset)):
    return "{" + ", ".join(sorted(describe(x, d) for x in obj)) + "}"
  if isinstance(obj, functools.partial):
    kwargs = ", ".join(f"{k}: {describe(v, d)}" for k, v in sorted(obj.keywords.items()))
    return f"partial({describe(obj.func, d)}, args={describe(list(obj.args), d)}, kwargs={{{kwargs}}})"
  if isinstance(obj, seqio.Vocabulary):
    return "vocabulary " + vocabulary_digest(obj)
  if isinstance(obj, seqio.Feature):
    return feature_description(obj)
  if isinstance(obj, types.FunctionType):
    name = f"{obj.__module__}.{obj.__qualname__}"
    return f"function {name} sha256={_sha256(chr(0).join(_function_closure(obj)).encode())}"
  if isinstance(obj, (types.BuiltinFunctionType, types.MethodType)) and not hasattr(obj, "__code__"):
    return f"builtin:{getattr(obj, '__qualname__', repr(obj))}"
  if isinstance(obj, types.MethodType):
    return f"method {describe(obj.__func__, d)} of {describe(obj.__self__, d)}"
  if isinstance(obj, type):
    if obj.__module__ == "builtins":
      return f"class {obj.__qualname__}"
    return f"class {obj.__module__}.{obj.__qualname__} sha256={_sha256(_function_source(obj).encode())}"
  if hasattr(obj, "__dict__"):
    # A callable object (e.g. a preprocessor class instance): its class code and its state.
    cls = type(obj)
    state = {k: v for k, v in vars(obj).items() if not k.startswith("__")}
    return f"{describe(cls, d)}({describe(state, d)})"
  return _ADDRESS.sub("", repr(obj))


def vocabulary_digest(vocabulary: Any) -> str:
  """SHA-256 of what decides a vocabulary's ids.

  For a `seqio.SentencePieceVocabulary` (and so `GemmaVocabulary`) that is the serialized model
  proto plus `extra_ids`; another copy of the same `tokenizer.model` gives the same digest.
  """
  import seqio  # pylint: disable=g-import-not-at-top

  cls = type(vocabulary)
  parts = [f"{cls.__module__}.{cls.__qualname__}", f"extra_ids={vocabulary.extra_ids}"]
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    parts.append(_sha256(vocabulary.sp_model))
  elif isinstance(vocabulary, seqio.ByteVocabulary):
    parts.append("bytes")
  else:
    parts.append(_ADDRESS.sub("", repr(vocabulary)))
  return _sha256("\n".join(parts).encode())


def feature_description(feature: Any) -> str:
  """The parts of a `seqio.Feature` that shape cached data (the vocabulary is separate)."""
  return (f"dtype={getattr(feature.dtype, 'name', feature.dtype)} rank={feature.rank} "
          f"add_eos={feature.add_eos} required={feature.required}")


def _source_description(source: Any) -> str:
  cls = type(source)
  parts = [f"{cls.__module__}.{cls.__qualname__}"]
  tfds = getattr(source, "tfds_dataset", None)
  if tfds is not None:
    # TFDS data is identified by name/version/config; it may not be present at load time.
    parts.append(f"tfds={getattr(tfds, 'name', None)} split_map={describe(getattr(tfds, '_split_map', None))}")
    return "\n".join(parts)
  for split in sorted(source.splits):
    try:
      shards = source.list_shards(split)
    except Exception as e:  # pylint: disable=broad-except
      parts.append(f"{split}: unlisted ({type(e).__name__})")
      continue
    parts.append(f"{split}: " + ", ".join(describe_file(s) for s in shards))
  dataset_fn = getattr(source, "_dataset_fn", None)
  if dataset_fn is not None:
    parts.append("dataset_fn " + describe(dataset_fn))
  return "\n".join(parts)


def task_components(task: Any) -> Dict[str, str]:
  """{component name: sha256} for a `seqio.Task` that has a `CacheDatasetPlaceholder`."""
  if not task.supports_caching:
    raise ValueError(f"Task {task.name!r} has no seqio.CacheDatasetPlaceholder: nothing to cache")
  components = {"fingerprint_version": str(FINGERPRINT_VERSION)}
  for name, feature in sorted(task.output_features.items()):
    components[f"vocabulary[{name}]"] = vocabulary_digest(feature.vocabulary)
  components["output_features"] = _sha256(describe(
      {k: feature_description(f) for k, f in task.output_features.items()}).encode())
  components["source"] = _sha256(_source_description(task.source).encode())
  import seqio  # pylint: disable=g-import-not-at-top
  cache_idx = next(i for i, p in enumerate(task.preprocessors)
                   if isinstance(p, seqio.CacheDatasetPlaceholder))
  for i, prep in enumerate(task.preprocessors[:cache_idx]):
    fn = prep.func if isinstance(prep, functools.partial) else prep
    label = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    components[f"preprocessor[{i}]:{label}"] = _sha256(describe(prep).encode())
  return components


def combine(components: Mapping[str, str]) -> str:
  """One SHA-256 over all components (order independent)."""
  return _sha256(json.dumps(dict(components), sort_keys=True).encode())


def task_fingerprint(task: Any) -> Dict[str, Any]:
  """{"fingerprint": sha256, "components": {...}} for `task`, as stored in the cache metadata."""
  components = task_components(task)
  return {"fingerprint": combine(components), "components": components}


def diff_components(cached: Mapping[str, str], current: Mapping[str, str]) -> List[str]:
  """Names of the components that differ (or exist on one side only), sorted."""
  return sorted(k for k in set(cached) | set(current) if cached.get(k) != current.get(k))
