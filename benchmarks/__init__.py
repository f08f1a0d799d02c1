"""prunebench's library. Importing it stores the config schema in Hydra's ConfigStore,
so that conf/config.yaml composes from run.py, score.py, tests and notebooks alike."""

from benchmarks import config_schema  # noqa: F401  (registration side effect)
