"""Exit codes and one-line errors of the command-line entry points (run.py, score.py).

A multirun runs many cells in one process; each reports its outcome here and the
process exits with the worst, so that a script or scheduler sees the state of the
whole grid. The bookkeeping is kept apart from the task function's return value,
which Hydra sweepers read as the objective.
"""

from __future__ import annotations

import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from benchmarks.config_schema import SEED_RANGE, describe
from benchmarks.errors import PrunebenchError, RankStopped, RunDiverged


class ExitCode(IntEnum):
    """Ordered by severity: a multirun exits with the highest code of its cells."""

    FINISHED = 0
    DIVERGED = 1
    BAD_INPUT = 2
    CRASHED = 3


_outcomes: list[ExitCode] = []


def report(code: ExitCode) -> None:
    """Record the outcome of one cell (or of a job that ended before its cell ran)."""
    _outcomes.append(code)


def worst() -> ExitCode:
    return max(_outcomes, default=ExitCode.FINISHED)


def error(message: str) -> None:
    print(f"prunebench: error: {message}", file=sys.stderr, flush=True)


def record_outcome(record: Mapping[str, Any]) -> None:
    """A cell's record, run now or found (skipped), counts by its status."""
    report(ExitCode.DIVERGED if record["status"] == "diverged" else ExitCode.FINISHED)


@contextmanager
def cell_outcome() -> Iterator[None]:
    """Report how the cell's job ended: the next cell of a multirun runs in any case.

    Bad input is one line (exit 2); a divergence is a result (exit 1); any other
    exception is a crash (exit 3) and keeps its traceback, which is what one debugs.
    """
    try:
        yield
    except RunDiverged as err:
        print(f"prunebench: run diverged: {err} (recorded with status 'diverged')", file=sys.stderr)
        report(ExitCode.DIVERGED)
    except PrunebenchError as err:
        error(str(err))
        report(ExitCode.BAD_INPUT)
    except RankStopped as err:
        if err.origin and err.__cause__ is not None:
            traceback.print_exception(err.__cause__)
        error(f"{err} (a rerun resumes the cell from its last checkpoint)")
        report(ExitCode.CRASHED)
    except Exception:
        traceback.print_exc()
        error("the run crashed (traceback above); a rerun runs this cell again")
        report(ExitCode.CRASHED)


class SweepOutcomes(Callback):
    """Carries each job's exit code to the process that launched the multirun.

    Under a submitit launcher (local or SLURM) a job runs in another process, often on
    another node: it leaves its code in its own output folder, and the launching process
    reads them when the sweep ends. The file is named by the launch (an id the launching
    process puts in the environment, which its jobs inherit), so that two sweeps sharing a
    sweep folder (started in the same second) never read each other's codes. Registered in
    conf/config.yaml under hydra.callbacks.
    """

    FILE = ".prunebench_exit_code"
    LAUNCH = "PRUNEBENCH_LAUNCH_ID"

    def __init__(self) -> None:
        self._first = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[self.LAUNCH] = uuid.uuid4().hex

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._first = len(_outcomes)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        code = max(_outcomes[self._first :], default=ExitCode.FINISHED)
        (Path(str(config.hydra.runtime.output_dir)) / self._file()).write_text(f"{int(code)}\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for path in Path(str(config.hydra.sweep.dir)).rglob(self._file()):
            report(ExitCode(int(path.read_text())))
            path.unlink(missing_ok=True)

    def _file(self) -> str:
        return f"{self.FILE}.{os.environ.get(self.LAUNCH, 'unnamed')}"


def run_entry_point(hydra_main: Callable[[], Any]) -> NoReturn:
    """Run a `@hydra.main` function and exit with the worst outcome of its cells.

    A config Hydra cannot compose (an unknown key, a wrong type, a missing group
    option) is one line and exit 2; HYDRA_FULL_ERROR=1 still shows Hydra's trace.
    """
    wants_trace = bool(os.environ.get("HYDRA_FULL_ERROR"))
    # Hydra re-raises composition errors only under this switch, instead of printing them
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        if wants_trace:
            raise
        error(describe(err))
        report(ExitCode.BAD_INPUT)
    except ValueError as err:
        if "integer string conversion" not in str(err):
            raise
        # Hydra's override parser meets an integer longer than Python converts
        error(f"an override holds an integer too long to read ({err}); {SEED_RANGE}")
        report(ExitCode.BAD_INPUT)
    except Exception:
        # outside any cell: a launcher's failure, e.g. a submitit task that was killed
        traceback.print_exc()
        report(ExitCode.CRASHED)
    sys.exit(int(worst()))
