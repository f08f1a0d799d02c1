"""Preemption: the training state is saved at the step the cluster's signal arrives.

submitit forwards SLURM's preemption or time-limit signal (USR2, or
$SUBMITIT_PREEMPT_SIGNAL) to a handler that requeues the job and exits at once, losing
every step since the last periodic checkpoint. While a checkpointed training runs, the
guard defers that handler to the end of the current step, where the trainer saves first.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any


def preemption_signal() -> signal.Signals:
    """The signal submitit's job handler listens to (its own environment variable)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class PreemptionGuard:
    """Holds back a Python handler of the preemption signal until `hand_over()`.

    Only a Python-level handler (submitit's) is deferred; without one the signal keeps its
    default action. An inactive guard (nothing to save) and one outside the main thread do
    nothing.
    """

    def __init__(self, active: bool = True) -> None:
        self.active = active
        self.signum = preemption_signal()
        self.step = 0  # the step in progress, kept current by the trainer
        self.arrived_at_step: int | None = None
        self._frame: FrameType | None = None
        self._handler: Any = None

    @property
    def requested(self) -> bool:
        return self.arrived_at_step is not None

    def __enter__(self) -> PreemptionGuard:
        if self.active and threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(self.signum)
            if callable(handler):
                self._handler = handler
                signal.signal(self.signum, self._defer)
        return self

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if self.arrived_at_step is None:
            self.arrived_at_step, self._frame = self.step, frame

    def request(self, step: int) -> None:
        """Act as if the signal arrived in `step`: another rank of the job received it."""
        if self.arrived_at_step is None:
            self.arrived_at_step = step

    def hand_over(self) -> None:
        """Restore the deferred handler and run it (submitit's requeues and exits). A handler
        that returns (submitit's on a task other than rank 0) has dealt with the signal:
        the guard no longer reports it, so training goes on without saving at every step."""
        handler, self._handler = self._handler, None
        if handler is None:
            return
        signal.signal(self.signum, handler)
        handler(self.signum, self._frame)
        self.arrived_at_step = None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handler is None:
            return
        if self.requested and kind is None:
            self.hand_over()  # a signal after the last step boundary is still obeyed
        else:
            signal.signal(self.signum, self._handler)
