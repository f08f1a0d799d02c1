"""Compute a pruning method's scores once (cached) and export them in original order.

python score.py method=el2n data=fashion_mnist out=el2n.csv
python score.py -m method=el2n,forgetting        # pre-compute a grid's scores

Exit code: 0 done, 2 bad input, 3 a crash (a multirun: the worst of its jobs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from benchmarks.cli import ExitCode, cell_outcome, report, run_entry_point
from benchmarks.config_schema import validate
from benchmarks.export import export_scores
from benchmarks.pipeline import method_from_config, prepare, resolve_device
from benchmarks.plugins import load_command_line_plugins, load_plugins


@hydra.main(version_base="1.3", config_path="conf", config_name="score")
def main(cfg: DictConfig) -> None:
    with cell_outcome():
        validate(cfg)
        load_plugins(list(cfg.plugins))
        method, label = method_from_config(cfg.method)
        start = time.perf_counter()
        prep = prepare(cfg, resolve_device(str(cfg.device)))
        method = method.resolve(prep.ctx)
        method.check(prep.ctx)
        runs = method.score_runs(prep.ctx)
        meta = {
            "method": label,
            "method_name": method.name,
            "options": method.options(),
            "direction": method.direction,
            "data": prep.data_summary(),
            "score_cost": prep.ctx.cost.as_record(),
            "seconds": time.perf_counter() - start,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        out = export_scores(Path(str(cfg.out)), prep.origin, prep.ctx.labels, runs, meta)
        print(
            f"{method.name} scores of {runs.shape[1]} examples ({runs.shape[0]} runs, "
            f"{prep.ctx.cost.trainings_run} proxy trainings run now) -> {out}",
            flush=True,
        )
        report(ExitCode.FINISHED)


if __name__ == "__main__":
    load_command_line_plugins(sys.argv[1:])
    run_entry_point(main)
