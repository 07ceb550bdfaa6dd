"""Checksums of the files of a checkpoint, written after a save and verified before a restore.

Orbax does not notice a flipped bit in a data file: the checkpoint restores, and the damage
shows up later as a NaN (or not at all). `write` records the size and SHA-256 of every file under
`checkpoint_<step>/state/` in `checkpoint_<step>/checksums.json`, next to `state/`; T5X and
orbax only read `state/` and `_CHECKPOINT_METADATA`, so the extra file does not change what they
restore. `verify` recomputes them and names the first file that differs.

>>> import shutil, tempfile
>>> run = tempfile.mkdtemp()
>>> step_dir = os.path.join(run, "checkpoint_10")
>>> os.makedirs(os.path.join(step_dir, STATE_DIR, "d"))   # as orbax leaves it after a save
>>> for name, data in [("_METADATA", b"{}"), ("d/0", bytes(64))]:
...   with open(os.path.join(step_dir, STATE_DIR, name), "wb") as f:
...     _ = f.write(data)
>>> os.path.relpath(write(step_dir), run)
'checkpoint_10/checksums.json'
>>> verify(step_dir)                             # every file matches
True
>>> with open(os.path.join(step_dir, STATE_DIR, "d", "0"), "r+b") as f:
...   _ = f.write(b"\\x01")                       # one flipped bit
>>> verify(step_dir)
Traceback (most recent call last):
model.runner.checkpoint_checksums.CorruptCheckpointError: checkpoint file .../checkpoint_10/state/d/0
differs from what was written (SHA-256 mismatch, see .../checkpoint_10/checksums.json): the
checkpoint is damaged
>>> os.remove(os.path.join(step_dir, CHECKSUMS_FILE))   # as T5X writes it: nothing to compare with
>>> verify(step_dir)
False
>>> shutil.rmtree(run)

Pure standard library: no TF or JAX needed to check a checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict

CHECKSUMS_FILE = "checksums.json"
STATE_DIR = "state"
_CHUNK = 1 << 20


class CorruptCheckpointError(ValueError):
  """A checkpoint file differs from what was written (size or SHA-256), or is missing."""


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      h.update(block)
  return h.hexdigest()


def _files(state_dir: str) -> Dict[str, str]:
  """{path relative to state/: absolute path} of every file under `state_dir`."""
  out = {}
  for root, _, names in os.walk(state_dir):
    for name in names:
      full = os.path.join(root, name)
      out[os.path.relpath(full, state_dir)] = full
  return out


def write(step_dir: str) -> str:
  """Records size and SHA-256 of every file under `<step_dir>/state`; returns the file written.

  Written to a temporary name and renamed, so a crash leaves either no checksums (the
  checkpoint is then restored unverified, like one written by T5X) or complete ones.
  """
  state_dir = os.path.join(step_dir, STATE_DIR)
  files = {rel: {"size": os.path.getsize(full), "sha256": _sha256(full)}
           for rel, full in sorted(_files(state_dir).items())}
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({"algorithm": "sha256", "root": STATE_DIR, "files": files}, f, indent=1,
              sort_keys=True)
  os.replace(tmp, path)
  return path


def verify(step_dir: str) -> bool:
  """True when every recorded file is intact; False when there is nothing recorded.

  Raises CorruptCheckpointError naming the first missing or differing file.
  """
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(path):
    return False
  try:
    with open(path, encoding="utf-8") as f:
      recorded = json.load(f)["files"]
  except (ValueError, KeyError) as e:
    raise CorruptCheckpointError(f"{path} is not a readable checksum list ({e}); the "
                                 "checkpoint cannot be verified") from e
  state_dir = os.path.join(step_dir, STATE_DIR)
  for rel, want in sorted(recorded.items()):
    full = os.path.join(state_dir, rel)
    if not os.path.isfile(full):
      raise CorruptCheckpointError(f"checkpoint file {full} is missing (listed in {path})")
    size = os.path.getsize(full)
    if size != want["size"]:
      raise CorruptCheckpointError(f"checkpoint file {full} has {size} bytes, {want['size']} "
                                   f"were written (see {path}): the checkpoint is damaged")
    if _sha256(full) != want["sha256"]:
      raise CorruptCheckpointError(f"checkpoint file {full} differs from what was written "
                                   f"(SHA-256 mismatch, see {path}): the checkpoint is damaged")
  return True
