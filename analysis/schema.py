"""The result record as its readers see it, in one module.

`collect` and the W&B readers (`wandb_source`, `wandb_offline`) all import the schema from
here, so that none of them imports another for it.
"""

from benchmarks.results import DATA_LOCATION_KEYS, SPEED_ONLY_TRAIN_KEYS
from benchmarks.results import RECORD_SCHEMA as SCHEMA
from benchmarks.wandb_logger import METRIC_KEYS

# The keys that name a cell of a grid: runs equal in these are repeats of one cell.
CELL_KEYS = (
    "data",
    "model",
    "method",
    "method_name",
    "fraction",
    "seed",
    "keep",
    "balance",
    "strategy",
    "offset",
    "budget",
    "epochs",
)

__all__ = ["CELL_KEYS", "DATA_LOCATION_KEYS", "METRIC_KEYS", "SCHEMA", "SPEED_ONLY_TRAIN_KEYS"]
