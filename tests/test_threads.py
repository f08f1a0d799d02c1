"""The CPU thread policy as a prunebench process sees it: how long OpenMP's threads spin
before they sleep, as the runtime reports it (OMP_DISPLAY_ENV=verbose: GNU OpenMP's
GOMP_SPINCOUNT), and torch's thread count, under a
narrowed CPU affinity, a SLURM allocation, the user's own settings and the off switch."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from patience import HUNG_AFTER_S

ROOT = Path(__file__).resolve().parent.parent
OWN = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "PRUNEBENCH_OMP_NUM_THREADS",
    "PRUNEBENCH_THREAD_POLICY",
    "SLURM_CPUS_PER_TASK",
)
PROBE = "import benchmarks, torch\ntorch.ones(4).sum()\nprint(torch.get_num_threads())"
GNU_DEFAULT_SPIN = 300_000
BRIEF_SPIN = 3000  # the policy's choice, measured in docs/performance.md


def seen(cpus: set[int] | None = None, **env: str) -> tuple[int, int]:
    """(OpenMP's spin count as its runtime reports it, torch's thread count) in a fresh
    process that imports prunebench first, as every entry point does."""
    clean = {k: v for k, v in os.environ.items() if k not in OWN}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "verbose", **env},
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert proc.returncode == 0, proc.stderr
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", proc.stderr)
    if spin is None:
        pytest.skip("torch's OpenMP runtime is not GNU's: it does not report its spin count")
    return int(spin.group(1)), int(proc.stdout.split()[-1])


def test_openmp_threads_spin_briefly_then_sleep_and_use_the_cores_there_are():
    spin, threads = seen()
    assert spin == BRIEF_SPIN
    assert 1 <= threads <= len(os.sched_getaffinity(0))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to narrow to 1")
def test_threads_follow_the_cpu_affinity_and_the_slurm_allocation():
    one = {min(os.sched_getaffinity(0))}
    assert seen(cpus=one) == (BRIEF_SPIN, 1)
    assert seen(SLURM_CPUS_PER_TASK="1") == (BRIEF_SPIN, 1)


def test_the_users_settings_and_the_off_switch_win():
    active, threads = seen(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert active > GNU_DEFAULT_SPIN and threads == 1
    assert seen(OMP_WAIT_POLICY="PASSIVE")[0] == 0
    assert seen(GOMP_SPINCOUNT="12345")[0] == 12345
    assert seen(PRUNEBENCH_THREAD_POLICY="none")[0] == GNU_DEFAULT_SPIN  # the runtime's own
    # a parent's choice, inherited (a job submitted from a smaller allocation), is made again
    assert seen(OMP_NUM_THREADS="1", PRUNEBENCH_OMP_NUM_THREADS="1") == seen()


def test_the_busy_benchmark_compares_each_policy_with_the_quiet_run_by_hand():
    from benchmarks.speed.busy import report

    rows = [
        {"workload": "w", "competitors": k, "policy": p, "seconds": s, "train_seconds": s / 2}
        for k, old, new in ((0, 10.0, 8.0), (2, 100.0, 12.0))
        for p, s in (("old", old), ("new", new))
    ]
    assert report(rows)[2:] == [
        "| w | 0 | 10.0 (5.0) | 8.0 (4.0) | 0.80 | 1.00 |",
        "| w | 2 | 100.0 (50.0) | 12.0 (6.0) | 0.12 | 1.50 |",
    ]
    passive = [{**r, "policy": "passive", "seconds": 9.0} for r in rows if r["policy"] == "old"]
    table = report(rows[:1] + passive[:1] + rows[1:2])
    assert table[0].count("policy, s (train)") == 3
    assert table[2] == "| w | 0 | 10.0 (5.0) | 9.0 (5.0) | 8.0 (4.0) | 0.80 | 1.00 |"
