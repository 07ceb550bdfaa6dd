"""Importing our packages changes no attribute of seqio or TensorFlow.

Each package is imported in a fresh interpreter, after seqio and TensorFlow, with a snapshot of
the attributes (name -> identity of the value) of their modules and classes taken before and
compared after. Registering tasks adds entries to seqio's registries (dictionaries); that is what
registration is for and is not compared here, only attributes are.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (module, attribute path or "" for the module itself)
WATCHED = [
    ("seqio", ""), ("seqio", "Task"), ("seqio", "Mixture"), ("seqio", "FileDataSource"),
    ("seqio", "TaskRegistry"), ("seqio", "MixtureRegistry"), ("seqio", "Vocabulary"),
    ("seqio", "SentencePieceVocabulary"), ("seqio", "FeatureConverter"),
    ("seqio.beam_utils", ""), ("seqio.utils", ""), ("seqio.dataset_providers", ""),
    ("seqio.dataset_providers", "_CachedDataSource"), ("seqio.preprocessors", ""),
    ("seqio.vocabularies", ""), ("seqio.feature_converters", ""),
    ("tensorflow", ""), ("tensorflow", "data.Dataset"), ("tensorflow", "io"),
]

_SNAPSHOT = textwrap.dedent("""
    import importlib, json, sys
    WATCHED = json.loads(sys.argv[1])
    PACKAGE = sys.argv[2]

    def snapshot():
      out = {}
      for module, path in WATCHED:
        obj = importlib.import_module(module)
        for part in filter(None, path.split(".")):
          obj = getattr(obj, part)
        out[module + ":" + path] = {k: id(v) for k, v in vars(obj).items()}
      return out

    import seqio, seqio.beam_utils, tensorflow  # what the snapshot looks at, loaded first
    before = snapshot()
    importlib.import_module(PACKAGE)
    after = snapshot()
    changed = []
    for key in before:
      for name in sorted(set(before[key]) | set(after[key])):
        if before[key].get(name) != after[key].get(name):
          how = ("added" if name not in before[key] else
                 "removed" if name not in after[key] else "replaced")
          changed.append(f"{key}.{name} {how}")
    print(json.dumps(changed))
    """)


@pytest.mark.parametrize("package", ["gemma_seqio", "gemma_tasks", "feature_converters", "model",
                                     "cache_scripts"])
def test_importing_changes_no_attribute_of_seqio_or_tf(package):
  out = subprocess.run([sys.executable, "-c", _SNAPSHOT, json.dumps(WATCHED), package],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr[-3000:]
  changed = json.loads(out.stdout.strip().splitlines()[-1])
  assert changed == [], f"importing {package} changed: {changed}"


@pytest.mark.parametrize("package", ["gemma_seqio", "gemma_tasks", "feature_converters"])
def test_dependencies_run_one_way(package):
  """cache_scripts and model use gemma_tasks / feature_converters / gemma_seqio, never the reverse."""
  code = (f"import sys, {package}; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cache_scripts', 'model')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("package, not_loaded", [
    # The light core: nothing heavy, nothing registered.
    ("gemma_seqio", ("gemma_tasks", "seqio", "tensorflow", "jax", "cache_scripts", "model")),
    # The converters read the ids from gemma_seqio: importing them registers no task.
    ("feature_converters", ("gemma_tasks", "cache_scripts", "model")),
    # The pure model library: no seqio, no TensorFlow, none of the data packages.
    ("model", ("gemma_tasks", "feature_converters", "cache_scripts", "seqio", "tensorflow")),
])
def test_light_packages_load_nothing_they_do_not_use(package, not_loaded):
  code = (f"import sys, {package}; "
          f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(not_loaded)!r}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
