"""prunebench entry point: one Hydra job = one cell of a pruning benchmark grid.

python run.py                                  # digits, cnn, random, 50% removed
python run.py -m method=random,full prune.fraction=0.3,0.5 seed=0,1
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmarks.errors import PrunebenchError, RunDiverged
from benchmarks.objective import check_objective, objective
from benchmarks.pipeline import run
from benchmarks.summary import summary_lines

EXIT_DIVERGED = 1
EXIT_BAD_INPUT = 2
_exit_codes: list[int] = []


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one cell; return its objective (validation accuracy) for optimising sweepers."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_objective(cfg, hydra_cfg)
    except PrunebenchError as err:
        print(f"prunebench: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)  # the same for every trial: stop the sweep before any work
    try:
        record = run(cfg, progress=bool(cfg.run.progress) and not multirun)
    except RunDiverged as err:
        print(f"prunebench: run diverged: {err} (recorded with status 'diverged')", file=sys.stderr)
        _exit_codes.append(EXIT_DIVERGED)
        return objective(None)
    except PrunebenchError as err:
        print(f"prunebench: error: {err}", file=sys.stderr)
        _exit_codes.append(EXIT_BAD_INPUT)
        return objective(None)
    print("\n".join(summary_lines(record)), flush=True)
    return objective(record)


if __name__ == "__main__":
    main()
    sys.exit(max(_exit_codes, default=0))
