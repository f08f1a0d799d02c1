"""The CPU thread policy of every prunebench process, applied before torch loads.

torch's OpenMP threads spin while they wait for each other. On a machine whose cores other
processes use too (a shared workstation, a login node, a SLURM node whose jobs share
cores, a CI runner beside anything) the spinning threads fight those processes for the
cores, and a run was 15-23x slower with two CPU-bound processes beside it on 2 cores. So:

- OpenMP threads spin only briefly before they sleep when they wait: GNU OpenMP's
  `GOMP_SPINCOUNT=3000` (about 30 microseconds; its default is 300,000, about 3 ms) and
  `OMP_WAIT_POLICY=PASSIVE` for the other runtimes. Measured by `python -m benchmarks.speed
  busy` on the default cell (docs/performance.md): sleeping at once (spin count 0) halved
  the time beside two CPU-bound processes but made a quiet run's training 1.8x slower; 3,000
  spins kept the quiet time of the libraries' default and the busy time of sleeping at once;
- no more threads than the cores this process may use: its CPU affinity (which a SLURM
  task's binding sets), the SLURM allocation (`SLURM_CPUS_PER_TASK`) and a container's CPU
  quota (cgroup v2 `cpu.max`), whichever is least. On a machine it may use whole, the
  libraries keep their own count (torch's: the physical cores, not every hyperthread).

A variable the user set wins (`OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`, `OMP_NUM_THREADS`); so does
`PRUNEBENCH_THREAD_POLICY=none`, which leaves the libraries' defaults (the behaviour before
this policy, as `python -m benchmarks.speed busy` compares). `benchmarks/__init__.py` applies
it, so every entry point (run.py, score.py, `python -m analysis`, `python -m methods`, the
speed benchmarks, a SLURM task unpickling its job) has it before anything imports torch.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

OFF_SWITCH = "PRUNEBENCH_THREAD_POLICY"
# the OMP_NUM_THREADS this policy chose, exported with it: a child process (a submitit job
# on another node) that inherits the pair chooses again for its own cores
CHOSEN = "PRUNEBENCH_OMP_NUM_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
SPIN_COUNT = "3000"


def apply_thread_policy() -> None:
    """Set the OpenMP variables for this process (and its children), and torch's thread
    count if torch is already loaded."""
    if os.environ.get(OFF_SWITCH, "").lower() == "none":
        return
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # sleep at once: runtimes other than GNU's
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT  # GNU's: spin briefly first (wins over PASSIVE)
    chosen = os.environ.pop(CHOSEN, None)
    if "OMP_NUM_THREADS" in os.environ and os.environ["OMP_NUM_THREADS"] != chosen:
        return  # the user's
    os.environ.pop("OMP_NUM_THREADS", None)  # unset, or a parent's choice: choose again
    cores = usable_cores()
    if cores >= (os.cpu_count() or cores):
        return
    os.environ["OMP_NUM_THREADS"] = os.environ[CHOSEN] = str(cores)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > cores:  # loaded: too late for the
        torch.set_num_threads(cores)  # variable, so the count itself


def usable_cores() -> int:
    """The cores this process may use: the least of its affinity, its SLURM allocation and
    its cgroup's CPU quota (rounded up), at least 1."""
    limits = [_affinity()]
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        limits.append(int(slurm))
    quota = _cgroup_quota()
    if quota is not None:
        limits.append(quota)
    return max(1, min(limits))


def _affinity() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cgroup_quota() -> int | None:
    """cgroup v2's CPU quota in cores (`cpu.max` "200000 100000" = 2), None without one."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))
