"""prunebench entry point: one Hydra job = one cell of a pruning benchmark grid.

python run.py                                  # digits, cnn, random, 50% removed
python run.py -m method=random,full prune.fraction=0.3,0.5 seed=0,1

Exit code (a multirun: the worst of its cells, skipped ones included): 0 every cell
finished, 1 a cell diverged, 2 bad input, 3 a crash.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmarks.cli import ExitCode, cell_outcome, error, record_outcome, run_entry_point
from benchmarks.config_schema import validate
from benchmarks.errors import PrunebenchError
from benchmarks.objective import check_objective, maximise_by_default, objective
from benchmarks.plugins import load_command_line_plugins
from benchmarks.summary import summary_lines


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one cell; return its objective (validation accuracy) for optimising sweepers.

    The process's exit code is kept apart from this value, in benchmarks/cli.py.
    """
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_objective(cfg, hydra_cfg)
    except PrunebenchError as err:
        error(str(err))
        # the same for every trial: stop the sweep before any work
        sys.exit(int(ExitCode.BAD_INPUT))
    record = None
    with cell_outcome():
        validate(cfg)
        # imported once the config is valid: bad input is answered before torch loads
        from benchmarks.pipeline import run

        record = run(cfg, progress=bool(cfg.run.progress) and not multirun)
        if record["rank"] == 0:  # a data-parallel cell's other ranks leave it to rank 0
            print("\n".join(summary_lines(record)), flush=True)
        record_outcome(record)
    return objective(record)


if __name__ == "__main__":
    load_command_line_plugins(sys.argv[1:])
    maximise_by_default()
    run_entry_point(main)
