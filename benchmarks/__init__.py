"""prunebench's library. Importing it applies the CPU thread policy (benchmarks/threads.py)
before anything loads torch, and stores the config schema in Hydra's ConfigStore, so that
conf/config.yaml composes from run.py, score.py, tests and notebooks alike."""

from benchmarks.threads import apply_thread_policy

apply_thread_policy()

from benchmarks import config_schema  # noqa: E402, F401  (registration side effect)
