"""Dataflow cannot run here: test the assembled options and what the workers would install."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from cache_scripts import cache_tasks, dataflow, options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dataflow_options_ship_the_package():
  opts = dataflow.dataflow_pipeline_options(
      project="my-proj", region="us-central1", temp_location="gs://bucket/tmp",
      job_name="cache-1", max_num_workers=20, machine_type="n2-standard-4",
      extra=["--experiments=use_runner_v2"])
  assert opts == [
      "--runner=DataflowRunner", "--project=my-proj", "--region=us-central1",
      "--temp_location=gs://bucket/tmp", "--staging_location=gs://bucket/tmp/staging",
      "--job_name=cache-1", f"--setup_file={os.path.join(REPO, 'setup.py')}",
      "--max_num_workers=20", "--machine_type=n2-standard-4", "--experiments=use_runner_v2"]
  # Beam parses them into the options the Dataflow runner reads.
  from apache_beam.options import pipeline_options as po
  parsed = po.PipelineOptions(opts)
  assert parsed.view_as(po.StandardOptions).runner == "DataflowRunner"
  assert parsed.view_as(po.SetupOptions).setup_file == os.path.join(REPO, "setup.py")
  assert parsed.view_as(po.GoogleCloudOptions).project == "my-proj"
  assert parsed.view_as(po.WorkerOptions).max_num_workers == 20


def test_dataflow_options_with_a_wheel_instead_of_setup_py():
  opts = dataflow.dataflow_pipeline_options(
      project="p", region="r", temp_location="gs://b/t", job_name="j",
      extra=["--extra_package=/dist/gemma_seqio-0.1.0-py3-none-any.whl"])
  assert not any(o.startswith("--setup_file") for o in opts)
  assert opts[-1] == "--extra_package=/dist/gemma_seqio-0.1.0-py3-none-any.whl"


@pytest.mark.parametrize("kwargs,match", [
    (dict(project="", region="r", temp_location="gs://b/t"), "--project"),
    (dict(project="p", region="r", temp_location="/local/tmp"), "gs://"),
    (dict(project="p", region="r", temp_location="gs://b/t", job_name="Bad_Name"), "job name"),
    (dict(project="p", region="r", temp_location="gs://b/t", setup_file="/nope/setup.py"), "not found"),
])
def test_dataflow_options_are_checked(kwargs, match):
  with pytest.raises(ValueError, match=match):
    dataflow.dataflow_pipeline_options(**kwargs)


def test_dataflow_remote_options_pass_through_the_cache_job():
  opts = dataflow.dataflow_pipeline_options(project="p", region="r", temp_location="gs://b/t",
                                            job_name="j")
  assert options.assemble_pipeline_options(opts, workers=4) == opts
  assert not options.is_local(opts)


def test_local_options_never_use_the_downloading_direct_runner():
  assert options.assemble_pipeline_options([], workers=1) == [
      "--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
  two = options.assemble_pipeline_options(["--runner=DirectRunner"], workers=2)
  assert two[:3] == ["--runner=FnApiRunner", "--direct_num_workers=2",
                     "--direct_running_mode=multi_processing"]
  assert "--runner=DirectRunner" not in two
  # Explicit local settings win over --workers.
  assert options.assemble_pipeline_options(
      ["--direct_num_workers=3", "--direct_running_mode=multi_threading"], workers=1)[:1] == [
          "--runner=FnApiRunner"]
  with pytest.raises(ValueError, match="workers"):
    options.assemble_pipeline_options([], workers=0)
  flink = ["--runner=FlinkRunner", "--flink_master=host:8081", "--environment_type=LOOPBACK"]
  assert options.assemble_pipeline_options(flink, workers=2) == flink


DATAFLOW_ARGV = ["--project=p", "--region=us-central1", "--temp_location=gs://b/tmp",
                 "--job_name=j"]


def test_dry_run_prints_the_options(capsys):
  assert dataflow.main(DATAFLOW_ARGV + ["--output_cache_dir=gs://b/cache", "--dry_run"]) == 0
  lines = capsys.readouterr().out.split()
  assert lines[0] == "--runner=DataflowRunner" and f"--setup_file={REPO}/setup.py" in lines
  assert dataflow.main(DATAFLOW_ARGV + ["--output_cache_dir=/local/cache"]) == 1  # refused before anything runs
  assert "gs://" in capsys.readouterr().err


def test_submission_without_the_gcp_extras_says_what_to_install(capsys, monkeypatch):
  ran = []
  monkeypatch.setattr(cache_tasks, "main", lambda argv=None, settings=None: ran.append(settings) or 0)
  # This machine's pinned stack lacks apache-beam[gcp], as a fresh install does.
  assert dataflow.missing_gcp_modules() == ["apitools", "google.auth", "google.api_core",
                                            "google.cloud.storage"]
  assert dataflow.main(DATAFLOW_ARGV + ["--output_cache_dir=gs://b/cache"]) == 1
  err = capsys.readouterr().err
  assert "ERROR: the Dataflow runner needs apache-beam's gcp extras" in err
  assert "missing: apitools" in err and ".[dataflow]" in err and "gemma-seqio[dataflow]" in err
  assert not ran  # stopped before the job was built
  # With the extras present the job goes ahead, with the Dataflow options.
  monkeypatch.setattr(dataflow, "missing_gcp_modules", lambda: [])
  assert dataflow.main(DATAFLOW_ARGV + ["--output_cache_dir=gs://b/cache",
                                        "--tasks=gemma_quiz_qa,gemma_.*_libreoffice"]) == 0
  assert len(ran) == 1 and ran[0].output_cache_dir == "gs://b/cache"
  assert ran[0].tasks == ("gemma_quiz_qa", "gemma_.*_libreoffice")
  assert ran[0].pipeline_options[0] == "--runner=DataflowRunner"


EXPECTED_IN_PACKAGE = [
    "gemma_tasks/__init__.py", "gemma_tasks/tasks.py", "gemma_tasks/sources.py",
    "gemma_tasks/data/gemma_seqio_4k.model", "gemma_tasks/data/split_sizes.json",
    "gemma_tasks/data/quiz_qa.train.jsonl.gz", "gemma_tasks/data/libreoffice_en_de.test.jsonl.gz",
    "gemma_tasks/data/python_docs.validation.jsonl.gz",
    "gemma_tasks/data/trivia_qa_open.train.jsonl.gz", "gemma_tasks/data/gettext_en_de.train.jsonl.gz",
    "gemma_seqio/cli_log.py",
    "cache_scripts/__init__.py", "cache_scripts/cache_tasks.py", "gemma_tasks/cached.py",
    "cache_scripts/pipeline.py", "cache_scripts/options.py", "cache_scripts/metadata.py",
    "feature_converters/__init__.py",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """sdist and wheel built offline from a copy of the tracked files (the repo stays clean)."""
  src = tmp_path_factory.mktemp("src")
  files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
  for f in files:
    if os.path.exists(os.path.join(REPO, f)):
      os.makedirs(src / os.path.dirname(f), exist_ok=True)
      shutil.copy2(os.path.join(REPO, f), src / f)
  dist = tmp_path_factory.mktemp("dist")
  env = {**os.environ, "PIP_NO_INDEX": "1"}
  subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=src,
                 check=True, capture_output=True, env=env, timeout=300)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "--no-index", "-w", str(dist), str(src)], check=True, capture_output=True,
                 env=env, timeout=300)
  return dist


@pytest.mark.slow  # builds and installs a wheel
def test_wheel_contains_tasks_and_data(built):
  wheels = list(built.glob("gemma_seqio-*.whl"))
  assert len(wheels) == 1
  names = set(zipfile.ZipFile(wheels[0]).namelist())
  missing = [f for f in EXPECTED_IN_PACKAGE if f not in names]
  assert not missing, missing
  data = [n for n in names if n.startswith("gemma_tasks/data/") and n.endswith(".jsonl.gz")]
  in_repo = [f for f in os.listdir(os.path.join(REPO, "gemma_tasks", "data"))
             if f.endswith(".jsonl.gz")]
  assert len(data) == len(in_repo)


def test_wheel_offers_the_dataflow_extra_at_the_pinned_beam_version(built):
  """`pip install 'gemma-seqio[dataflow]'` brings apache-beam[gcp], same Beam as the pins."""
  wheel = next(built.glob("gemma_seqio-*.whl"))
  with zipfile.ZipFile(wheel) as z:
    metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
  assert "Provides-Extra: dataflow" in metadata
  pinned = next(line for line in open(os.path.join(REPO, "constraints.txt"))
                if line.startswith("apache-beam=="))
  version = pinned.strip().split("==")[1]
  assert f'Requires-Dist: apache-beam[gcp]=={version}; extra == "dataflow"' in metadata, metadata


def test_sdist_contains_tasks_data_and_setup(built):
  sdists = list(built.glob("gemma_seqio-*.tar.gz"))
  assert len(sdists) == 1
  with tarfile.open(sdists[0]) as tar:
    names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
  missing = [f for f in EXPECTED_IN_PACKAGE + ["setup.py"] if f not in names]
  assert not missing, missing


@pytest.mark.slow  # builds and installs a wheel
def test_installed_wheel_registers_tasks_from_its_own_data(built, tmp_path):
  """What a Dataflow worker does after pip install: import gemma_tasks, read a split."""
  wheel = next(built.glob("gemma_seqio-*.whl"))
  target = tmp_path / "site"
  zipfile.ZipFile(wheel).extractall(target)
  code = ("import gemma_tasks, seqio, sys; t = seqio.get_mixture_or_task('gemma_quiz_qa');"
          "assert gemma_tasks.__file__.startswith(sys.argv[1]), gemma_tasks.__file__;"
          "print(sum(1 for _ in t.get_dataset({'inputs': 64, 'targets': 64}, 'validation', shuffle=False)))")
  proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=str(tmp_path),
                        env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[-1] == "108"
