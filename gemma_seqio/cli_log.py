"""Our CLIs show our progress, results and warnings; third-party chatter goes to a log file.

TensorFlow, absl, Beam, orbax and the SentencePiece copy inside tensorflow_text's C++ op write
hundreds of lines per run (start-up notices of every process, "Using yield and return" per
Beam stage, `precompiled_charsmap is empty` at every vocabulary load). Much of it comes from
C++ and has no Python-level setting, so `to_log_file` works on file descriptors:

  * file descriptor 2 is pointed at the log file (`os.dup2`), so C++ logs and child processes
    (Beam workers inherit it) write there;
  * `sys.stderr` becomes a stream on a copy of the original descriptor 2: our `print(...,
    file=sys.stderr)` messages, tracebacks and progress bars still reach the terminal;
  * Python logging goes to the file (INFO and up, `warnings` included); records logged by our
    own packages at INFO and up are shown on the terminal too.

The log is `<output_dir>/<name>.log` (appended to). Until `output_dir` exists (a CLI may refuse
its flags before creating anything) it is written to a temporary file, moved there at the end;
if the directory never appears, the temporary file is kept only if the run failed (and its path
is printed).

This module imports nothing but the standard library, so a CLI can call it before TensorFlow
is imported (its start-up lines then land in the file too), and every package may use it.
`python -m gemma_tasks` and `python -m cache_scripts.cache_tasks` load TensorFlow in their
package's `__init__`, before `main()` runs: those packages call `start_if_run_as_module` first,
which starts the redirect (to a temporary file) only while Python is locating a `-m` module
(`sys.argv[0]` is then "-m"); the `to_log_file` of `main()` takes it over. Child processes
(Beam's SDK worker processes of `--workers`) see `GEMMA_SEQIO_LOG_FILE` and keep the descriptor they
inherited.

>>> import logging, shutil, tempfile
>>> from unittest import mock
>>> run_dir = tempfile.mkdtemp()
>>> with mock.patch.dict(os.environ):  # the example undoes its TF_CPP_MIN_LOG_LEVEL=3
...   with to_log_file(run_dir, "train") as log:   # in main(), after argparse
...     logging.getLogger("some_library").warning("Using yield and return")
>>> os.path.relpath(log.path, run_dir)
'train.log'
>>> with open(log.path) as f:   # the third-party warning went to the file, not the terminal
...   f.read()
'... WARNING some_library ...] Using yield and return\\n'
>>> shutil.rmtree(run_dir)
"""
from __future__ import annotations

import atexit
import io
import logging
import os
import sys
import tempfile
from typing import Optional

# The packages whose log records are ours (shown on the terminal as well as in the file).
OUR_PACKAGES = ("gemma_seqio", "gemma_tasks", "model", "cache_scripts", "feature_converters",
                "demo")
# The directory that holds our packages (this file is gemma_seqio/cli_log.py).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OUR_DIRS = tuple(os.path.join(_ROOT, p) + os.sep for p in OUR_PACKAGES)

# Read by TensorFlow when it loads; its messages go to the file either way, this only makes
# the file shorter.
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
# Set while a log file is in use; inherited by child processes, whose descriptor 2 is it.
ACTIVE_ENV = "GEMMA_SEQIO_LOG_FILE"


def is_ours(record: logging.LogRecord) -> bool:
  """True if the record was logged from a module of our packages (absl records included:
  absl reports the calling module as the record's path).

  >>> is_ours(logging.makeLogRecord({"pathname": os.path.join(_ROOT, "model", "train.py")}))
  True
  >>> is_ours(logging.makeLogRecord({"pathname": "/site-packages/apache_beam/core.py"}))
  False
  """
  return os.path.abspath(record.pathname).startswith(_OUR_DIRS)


class _OursOnly(logging.Filter):

  def filter(self, record):
    return is_ours(record)


class _TerminalFormatter(logging.Formatter):
  """INFO records as they are; warnings and errors with their level in front."""

  def format(self, record):
    text = super().format(record)
    return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


class LogFile:
  """Where third-party output goes while a `to_log_file` block runs; see the module docstring."""

  def __init__(self, output_dir: Optional[str], name: str):
    self.name = name
    self.final_path = os.path.join(output_dir, f"{name}.log") if output_dir else None
    self.path = self.final_path
    self._saved = {}
    self.active = False
    self.exit_code: Optional[int] = None   # main() sets it: a non-zero return names the log

  def start(self) -> "LogFile":
    if self.active:   # taken over from `start_if_run_as_module`
      return self
    self.active = True
    for k, v in _QUIET_ENV.items():
      os.environ.setdefault(k, v)
    if self.final_path and os.path.isdir(os.path.dirname(self.final_path) or "."):
      self._file = open(self.final_path, "a", encoding="utf-8", buffering=1)
    else:
      fd, self.path = tempfile.mkstemp(prefix=f"gemma-seqio-{self.name}-", suffix=".log")
      self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    self._terminal_fd = os.dup(2)
    try:
      real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
      real = False   # already redirected in Python (e.g. a test's capture): keep that stream
    self._saved["stderr"] = sys.stderr
    if real:
      sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(self._terminal_fd), "w"),
                                    encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                                    errors="backslashreplace", line_buffering=True)
    os.dup2(self._file.fileno(), 2)
    self.terminal = sys.stderr
    self._saved["env"] = os.environ.get(ACTIVE_ENV)
    os.environ[ACTIVE_ENV] = self.path

    root = logging.getLogger()
    self._saved["handlers"], self._saved["level"] = root.handlers[:], root.level
    self._install_handlers()
    logging.captureWarnings(True)
    return self

  def _install_handlers(self) -> None:
    root = logging.getLogger()
    to_file = logging.StreamHandler(self._file)
    to_file.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"))
    to_terminal = logging.StreamHandler(self.terminal)
    to_terminal.setLevel(logging.INFO)
    to_terminal.addFilter(_OursOnly())
    to_terminal.setFormatter(_TerminalFormatter("%(message)s"))
    # Replacing the root handlers (absl's among them) is configuring logging, not patching:
    # every library logs through its own logger to these.
    self._to_file = to_file
    root.handlers = [to_file, to_terminal]
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))

  def take_over(self, output_dir: Optional[str], name: str) -> None:
    """Gives an early log its real place: `<output_dir>/<name>.log`, now if the directory
    exists (what was written so far is copied there), else at `stop`."""
    self.name = name
    self.final_path = os.path.join(output_dir, f"{name}.log") if output_dir else None
    # Handlers added since the early start (absl's app.run adds its own) are dropped again.
    self._install_handlers()
    if not (self.final_path and os.path.isdir(os.path.dirname(self.final_path) or ".")):
      return
    new = open(self.final_path, "a", encoding="utf-8", buffering=1)
    self._file.flush()
    with open(self.path, encoding="utf-8", errors="replace") as src:
      new.write(src.read())
    os.dup2(new.fileno(), 2)
    self._to_file.setStream(new)
    self._file.close()
    os.remove(self.path)
    self._file, self.path = new, self.final_path
    os.environ[ACTIVE_ENV] = self.path

  def stop(self, failed: bool) -> None:
    if not self.active:
      return
    self.active = False
    if self._saved["env"] is None:
      os.environ.pop(ACTIVE_ENV, None)
    else:
      os.environ[ACTIVE_ENV] = self._saved["env"]
    logging.captureWarnings(False)
    root = logging.getLogger()
    root.handlers, root.level = self._saved["handlers"], self._saved["level"]
    sys.stdout.flush()
    self.terminal.flush()
    os.dup2(self._terminal_fd, 2)
    os.close(self._terminal_fd)
    if sys.stderr is not self._saved["stderr"]:
      sys.stderr.close()
      sys.stderr = self._saved["stderr"]
    self._file.close()
    if self.path != self.final_path and self.final_path and os.path.isdir(
        os.path.dirname(self.final_path) or "."):
      # The output directory was created during the run: the log joins it.
      with open(self.path, encoding="utf-8", errors="replace") as src, \
           open(self.final_path, "a", encoding="utf-8") as dst:
        dst.write(src.read())
      os.remove(self.path)
      self.path = self.final_path
    if not failed and self.path != self.final_path:
      os.remove(self.path)   # nothing to look at: a temporary log is kept for failures only
    elif failed:
      print(f"[{self.name}] the full log (library messages included) is {self.path}",
            file=sys.stderr, flush=True)

  def __enter__(self) -> "LogFile":
    return self.start()

  def __exit__(self, exc_type, exc, tb) -> None:
    # SystemExit(0) is a normal end; any other exception, or a non-zero exit, is a failure.
    failed = exc_type is not None and not (
        issubclass(exc_type, SystemExit) and exc.code in (0, None))
    self.stop(failed or self.exit_code not in (0, None))


_early: Optional[LogFile] = None


def start_if_run_as_module(package: str) -> None:
  """For a package whose `__init__` loads TensorFlow and which has a `python -m` CLI: starts
  the redirect before those imports, when this process is running one of its modules with
  `-m` (see the module docstring). Does nothing on a plain import or in a child process."""
  global _early
  if sys.argv[:1] != ["-m"] or ACTIVE_ENV in os.environ or _early is not None:
    return
  _early = LogFile(None, package).start()
  # main() never took it over (--help, a crash at import): put the terminal back at exit.
  atexit.register(lambda: _early.stop(failed=False))


def to_log_file(output_dir: Optional[str], name: str) -> LogFile:
  """A context in which third-party output goes to `<output_dir>/<name>.log` (see the module
  docstring). `output_dir=None`: a temporary file, removed unless the run fails. Set
  `.exit_code` to the CLI's return value so that a failed run says where its log is."""
  if _early is not None and _early.active:
    _early.take_over(output_dir, name)
    return _early
  return LogFile(output_dir, name)
