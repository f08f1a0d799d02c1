"""Compute a pruning method's scores once (cached) and export them in original order.

python score.py method=el2n data=fashion_mnist out=el2n.csv
python score.py -m method=el2n,forgetting        # pre-compute a grid's scores

Exit code: 0 done, 2 bad input, 3 a crash (a multirun: the worst of its jobs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from benchmarks.cli import ExitCode, cell_outcome, report, run_entry_point
from benchmarks.config_schema import validate
from benchmarks.export import export_method_scores
from benchmarks.plugins import load_command_line_plugins, load_plugins


@hydra.main(version_base="1.3", config_path="conf", config_name="score")
def main(cfg: DictConfig) -> None:
    with cell_outcome():
        validate(cfg)
        load_plugins(list(cfg.plugins))
        _, summary = export_method_scores(cfg, Path(str(cfg.out)))
        print(summary, flush=True)
        report(ExitCode.FINISHED)


if __name__ == "__main__":
    load_command_line_plugins(sys.argv[1:])
    run_entry_point(main)
