"""run.py with one injected fault, for the fault-injection tests.

The preemption signal gets a handler like submitit's (the job ends, to be requeued: the test
runs it again). PRUNEBENCH_FAULT names the fault:
- `usr2:<step>`: the job sends itself the preemption signal during proxy training step <step>;
- `kill:<step>`: SIGKILL during proxy training step <step> (before its update);
- `kill:summaries`: SIGKILL just before a proxy recording's summaries are written, after the
  training state at its stop was saved;
- `fill:checkpoint`: the file system of the checkpoints fills up right after the first one.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

import benchmarks.cache
import benchmarks.train
import methods.core.dynamics

PREEMPTED = 75  # what the job exits with once its handler ran (submitit's requeues it)


def preempted(signum, frame):
    sys.exit(PREEMPTED)


def fill(folder: Path) -> None:
    """Write into `folder` until its file system is full."""
    with open(folder / "filler", "ab", buffering=0) as f:
        try:
            while f.write(b"\0" * 65536):
                pass
        except OSError:
            pass


def inject(fault: str) -> None:
    kind, where = fault.split(":")
    if kind == "fill":
        save = benchmarks.train._save_checkpoint

        def saved_then_full(checkpointing, *args, **kwargs):
            saved = save(checkpointing, *args, **kwargs)
            if not (checkpointing.path.parent / "filler").exists():
                fill(checkpointing.path.parent)
            return saved

        benchmarks.train._save_checkpoint = saved_then_full
        return
    signum = signal.SIGUSR2 if kind == "usr2" else signal.SIGKILL
    if where == "summaries":
        write = benchmarks.cache.write_artifact

        def killed_before(path, arrays, meta):
            if path.name.startswith("dynamics-"):
                os.kill(os.getpid(), signum)
            write(path, arrays, meta)

        benchmarks.cache.write_artifact = killed_before
        return
    on_batch = methods.core.dynamics.DynamicsRecorder.on_batch

    def signalled_in_step(self, step, idx, logits, y):
        if step == int(where):
            os.kill(os.getpid(), signum)
        on_batch(self, step, idx, logits, y)

    methods.core.dynamics.DynamicsRecorder.on_batch = signalled_in_step


if __name__ == "__main__":
    signal.signal(signal.SIGUSR2, preempted)
    if os.environ.get("PRUNEBENCH_FAULT"):
        inject(os.environ["PRUNEBENCH_FAULT"])
    root = Path(__file__).resolve().parent.parent
    sys.argv[0] = str(root / "run.py")
    runpy.run_path(str(root / "run.py"), run_name="__main__")
