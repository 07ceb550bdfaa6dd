r"""The cache job on Dataflow: the same flags as `cache_scripts.cache_tasks`, plus the Cloud ones.

    python -m cache_scripts.dataflow \
        --project=my-project --region=us-central1 \
        --temp_location=gs://my-bucket/tmp \
        --output_cache_dir=gs://my-bucket/seqio_cache \
        --tasks='gemma_.*' --max_num_workers=20

Workers must import `gemma_tasks` (and its embedded data) to rebuild the Tasks by name (seqio
issue #109), so the job ships this package with `--setup_file=<repo>/setup.py`: every worker
runs `pip install` of gemma-seqio, whose wheel carries `gemma_tasks/data/*.jsonl.gz`, the
vocabulary model and `split_sizes.json` (tests/test_cache_dataflow.py builds the sdist and the
wheel and checks that). From an installed wheel instead of a checkout, pass
`--pipeline_options=--extra_package=/path/to/gemma_seqio-0.1.0-py3-none-any.whl`.

Dataflow needs Beam's Google Cloud extras (`apache-beam[gcp]`: apitools, google-cloud-storage,
google-auth, ...), which the pinned local stack does not install. They come with the extra

    pip install -c constraints.txt -e '.[dataflow]'     # or: pip install 'gemma-seqio[dataflow]'

and a real submission without them stops at once with that command (`missing_gcp_modules`).

`--dry_run` prints the Beam options and exits, which is how the option assembly is tested here
(nothing can reach Dataflow from this machine); it also says on stderr if the extras are missing.

Flink / Spark (portable runners) take the same job with other options, e.g.
    --pipeline_options=--runner=FlinkRunner,--flink_master=host:8081,--environment_type=LOOPBACK
    --pipeline_options=--runner=SparkRunner,--spark_master_url=spark://host:7077,--environment_type=LOOPBACK
With LOOPBACK the SDK workers are this process's Python (gemma-seqio already installed); with
DOCKER/PROCESS environments, install gemma-seqio into the worker image. On more than one machine
`--output_cache_dir` must be a shared filesystem (gs://, s3://, hdfs://).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
import time
from typing import List, Optional, Sequence

from cache_scripts import cache_tasks
from gemma_seqio import flags as flags_lib
from gemma_seqio.flags import option

REPO_SETUP_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "setup.py")

# Modules of apache-beam[gcp] that the Dataflow runner and gs:// paths need (top-level names).
GCP_MODULES = ("apitools", "google.auth", "google.api_core", "google.cloud.storage")
INSTALL_HINT = ("pip install -c constraints.txt -e '.[dataflow]' (in a gemma-seqio checkout), or "
                "pip install 'gemma-seqio[dataflow]'")



@dataclasses.dataclass(frozen=True, kw_only=True)
class DataflowSettings(cache_tasks.CacheSettings):
  """The cache job's settings plus Dataflow's; each field is the flag of the same name."""
  project: Optional[str] = option(None, help="Google Cloud project.")
  region: Optional[str] = option(None, help="Dataflow region, e.g. us-central1.")
  temp_location: Optional[str] = option(None, help="gs:// directory for Beam temporary files.")
  staging_location: Optional[str] = option(
      None, help="gs:// directory for staged files (default: --temp_location/staging).")
  setup_file: Optional[str] = option(
      None, help="setup.py that workers install (default: this checkout's setup.py).")
  job_name: Optional[str] = option(
      None, help="Dataflow job name (default: gemma-seqio-cache-<time>).")
  max_num_workers: Optional[int] = option(None, help="Upper bound for Dataflow autoscaling.")
  machine_type: Optional[str] = option(None, help="Worker machine type, e.g. n2-standard-4.")
  dry_run: bool = option(False, help="Print the assembled Beam options and exit.")


def missing_gcp_modules(modules: Sequence[str] = GCP_MODULES) -> List[str]:
  """The modules of `apache-beam[gcp]` that cannot be imported here.

  >>> missing_gcp_modules()      # the pinned local stack, without the [dataflow] extra
  ['apitools', 'google.auth', 'google.api_core', 'google.cloud.storage']
  """
  missing = []
  for name in modules:
    try:
      found = importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
      found = False
    if not found:
      missing.append(name)
  return missing


def gcp_missing_message(missing: Sequence[str]) -> str:
  return (f"the Dataflow runner needs apache-beam's gcp extras, which are not installed "
          f"(missing: {', '.join(missing)}). Install them with:\n  {INSTALL_HINT}")


def default_job_name(now: Optional[float] = None) -> str:
  """Dataflow job names: lowercase letters, digits and '-'.

  >>> default_job_name(1e9)       # a Unix time; default: now
  'gemma-seqio-cache-20010909-014640'
  """
  return "gemma-seqio-cache-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))


def dataflow_pipeline_options(
    *, project: str, region: str, temp_location: str, staging_location: Optional[str] = None,
    setup_file: Optional[str] = None, job_name: Optional[str] = None,
    max_num_workers: Optional[int] = None, machine_type: Optional[str] = None,
    extra: Sequence[str] = ()) -> List[str]:
  """Beam options for running the cache job on Dataflow.

  By default workers install this checkout (`--setup_file=<repo>/setup.py`):

  >>> dataflow_pipeline_options(project="p", region="us-central1", temp_location="gs://b/tmp",
  ...                           job_name="j")
  ['--runner=DataflowRunner', '--project=p', '--region=us-central1', '--temp_location=gs://b/tmp',
   '--staging_location=gs://b/tmp/staging', '--job_name=j', '--setup_file=/.../setup.py']

  With a wheel passed in `extra` there is no setup file:

  >>> dataflow_pipeline_options(project="p", region="us-central1", temp_location="gs://b/tmp",
  ...                           job_name="j", extra=["--extra_package=/dist/gemma_seqio.whl"])
  ['--runner=DataflowRunner', '--project=p', '--region=us-central1', '--temp_location=gs://b/tmp',
   '--staging_location=gs://b/tmp/staging', '--job_name=j', '--extra_package=/dist/gemma_seqio.whl']
  """
  missing = [n for n, v in (("project", project), ("region", region),
                            ("temp_location", temp_location)) if not v]
  if missing:
    raise ValueError(f"Dataflow needs --{', --'.join(missing)}")
  if not temp_location.startswith("gs://"):
    raise ValueError(f"--temp_location must be a gs:// path, got {temp_location!r}")
  job_name = job_name or default_job_name()
  if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job_name):
    raise ValueError(f"invalid Dataflow job name {job_name!r}: lowercase letters, digits, '-'")
  has_package = any(o.startswith(("--extra_package", "--sdk_container_image")) for o in extra)
  setup_file = setup_file or (REPO_SETUP_PY if not has_package else None)
  if setup_file and not os.path.exists(setup_file):
    raise ValueError(
        f"setup file {setup_file!r} not found; run from a gemma-seqio checkout, pass "
        "--setup_file, or ship a wheel with --pipeline_options=--extra_package=<wheel>")
  options = [
      "--runner=DataflowRunner", f"--project={project}", f"--region={region}",
      f"--temp_location={temp_location}",
      f"--staging_location={staging_location or temp_location.rstrip('/') + '/staging'}",
      f"--job_name={job_name}",
  ]
  if setup_file:
    # Workers pip-install gemma-seqio from it, with the embedded data (package_data).
    options.append(f"--setup_file={os.path.abspath(setup_file)}")
  if max_num_workers:
    options.append(f"--max_num_workers={max_num_workers}")
  if machine_type:
    options.append(f"--machine_type={machine_type}")
  return options + list(extra)


def main(argv: Optional[Sequence[str]] = None) -> int:
  s = flags_lib.parse(DataflowSettings, argv, prog="python -m cache_scripts.dataflow",
                      description=__doc__.split("\n", 1)[0])
  try:
    options = dataflow_pipeline_options(
        project=s.project, region=s.region, temp_location=s.temp_location,
        staging_location=s.staging_location, setup_file=s.setup_file, job_name=s.job_name,
        max_num_workers=s.max_num_workers, machine_type=s.machine_type,
        extra=s.pipeline_options)
  except ValueError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 1
  missing = missing_gcp_modules()
  if s.dry_run:
    print("\n".join(options))
    if missing:
      print(f"NOTE: {gcp_missing_message(missing)}", file=sys.stderr)
    return 0
  if not str(s.output_cache_dir or "").startswith("gs://"):
    print("ERROR: on Dataflow --output_cache_dir must be a gs:// path", file=sys.stderr)
    return 1
  if missing:  # before Beam: it would fail later, after building the job, less clearly
    print(f"ERROR: {gcp_missing_message(missing)}", file=sys.stderr)
    return 1
  job = {f.name: getattr(s, f.name) for f in dataclasses.fields(cache_tasks.CacheSettings)}
  return cache_tasks.main(settings=cache_tasks.CacheSettings(
      **{**job, "pipeline_options": tuple(options)}))


def console_main():
  sys.exit(main())


if __name__ == "__main__":
  console_main()
