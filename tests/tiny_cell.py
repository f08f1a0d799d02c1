"""One tiny cell run in-process (mlp, 200 digits, 2 epochs), results and cache in a folder."""

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from benchmarks.pipeline import run

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "data.max_train=200",
    "model=mlp",
    "train.epochs=2",
    "train.batch_size=32",
    "score.epoch=1",
    "score.runs=1",
    "run.checkpoint_steps=0",
]


def run_tiny_cell(folder: Path, *overrides: str) -> dict[str, Any]:
    places = [f"results.dir={folder / 'results'}", f"cache.dir={folder / 'cache'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run(compose("config", overrides=[*TINY, *places, *overrides]), progress=False)
