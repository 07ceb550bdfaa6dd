"""Turn SIGINT (Ctrl-C) and SIGTERM (preemption) into a request the training loop polls.

The loop finishes the step it is in, saves a checkpoint at that step and returns, instead of
dying with a KeyboardInterrupt and losing up to `--save_every` steps. A second Ctrl-C while
that is happening interrupts at once (the usual way out of something stuck).

>>> before = signal.getsignal(signal.SIGINT)
>>> steps = []
>>> with StopRequests() as stop:
...   while not stop.requested:
...     steps.append(len(steps))              # one training step
...     if len(steps) == 3:
...       signal.raise_signal(signal.SIGINT)  # Ctrl-C during the third step
>>> stop.requested, steps                     # the third step finished, no fourth one began
('SIGINT', [0, 1, 2])
>>> signal.getsignal(signal.SIGINT) is before
True

Handlers can only be installed from the main thread; elsewhere this does nothing (signals
are delivered to the main thread anyway).
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
  """Context manager recording the first SIGINT/SIGTERM; the previous handlers come back on exit."""

  def __init__(self):
    self.requested: Optional[str] = None
    self.signum: Optional[int] = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested:   # the second one: stop waiting for the loop
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    self.signum = signum

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
