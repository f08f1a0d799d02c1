"""`python -m benchmarks.speed busy`: runs on a busy CPU, under the old and the new thread policy.

Times whole `python run.py` processes (start-up, loading, training, evaluation: what a user
waits for) beside 0, 1 and 2 competing CPU-bound processes (each a Python loop), under the
old policy (`PRUNEBENCH_THREAD_POLICY=none`: the libraries' defaults, OpenMP threads that
spin while they wait) and the new one (benchmarks/threads.py: threads that spin briefly,
then sleep, no more than the cores the process may use); `--policies old passive new` adds
threads that sleep at once. Every repeat runs every cell once, in turn, so that a
change in the machine's load falls on all of them alike; the table gives medians.

Two workloads: the default cell (`python run.py`: digits, cnn, random; `--default` adds
overrides, e.g. train.epochs=3 to shorten it) and a cnn training on CIFAR-10 JPEG
(`--cifar-train` examples, `--cifar-epochs`, evaluated on `--cifar-test` images). Each is
run once untimed first (data decoded into the cache); `--workloads default` times the
first alone. The children get none of the OpenMP variables from here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speed.report import write_json
from benchmarks.threads import CHOSEN, OFF_SWITCH

ROOT = Path(__file__).resolve().parents[2]
# old: the libraries' defaults; passive: OpenMP threads sleep at once (GOMP_SPINCOUNT=0, the
# policy's first form); new: benchmarks/threads.py as it stands
POLICIES = {"old": {OFF_SWITCH: "none"}, "passive": {"GOMP_SPINCOUNT": "0"}, "new": {}}
COMPETITOR = "while True: pass"


def workloads(args: argparse.Namespace) -> dict[str, list[str]]:
    cifar = [
        "data=cifar10_jpg",
        "model=cnn",
        "method=full",
        f"data.max_train={args.cifar_train}",
        f"data.max_test={args.cifar_test}",
        f"train.epochs={args.cifar_epochs}",
    ]
    every = {
        "default": ("default cell", list(args.default)),
        "cifar": ("cnn on CIFAR-10 JPEG", cifar),
    }
    return dict(every[name] for name in args.workloads)


def run_once(overrides: list[str], policy: str, work: Path) -> dict[str, float]:
    """One `python run.py` under `policy`: its wall seconds and its record's stage timings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CHOSEN, OFF_SWITCH)
    }
    env.update(POLICIES[policy], PYTHONPATH=str(ROOT))
    out = Path(tempfile.mkdtemp(dir=work))
    args = [
        sys.executable,
        str(ROOT / "run.py"),
        *overrides,
        f"results.dir={out}/results",
        f"hydra.run.dir={out}/hydra",
        "run.progress=false",
        "run.skip_completed=false",
        "run.checkpoint_steps=0",
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=out, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run.py {' '.join(overrides)} failed:\n{proc.stderr[-2000:]}")
    (record,) = (json.loads(p.read_text()) for p in (out / "results").glob("*.json"))
    return {"seconds": seconds, "train_seconds": record["timings"]["train"]}


def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every (workload, competitors, policy) cell once per repeat, interleaved."""
    loads = workloads(args)
    for overrides in loads.values():  # untimed: the data set decoded into the cache
        run_once(overrides, "new", work)
    rows = {
        (name, k, policy): {"workload": name, "competitors": k, "policy": policy, "runs": []}
        for name in loads
        for k in args.competitors
        for policy in args.policies
    }
    for _ in range(args.repeats):
        for k in args.competitors:
            competitors = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(k)]
            try:
                for name, overrides in loads.items():
                    for policy in args.policies:
                        run = run_once(overrides, policy, work)
                        rows[name, k, policy]["runs"].append({**run, "load_1min": _load()})
            finally:
                for proc in competitors:
                    proc.kill()
                    proc.wait()
    for row in rows.values():
        row["seconds"] = statistics.median(r["seconds"] for r in row["runs"])
        row["train_seconds"] = statistics.median(r["train_seconds"] for r in row["runs"])
    return list(rows.values())


def report(rows: list[dict[str, Any]]) -> list[str]:
    """The table: medians of whole runs (train alone in brackets) under each policy, new
    against old and against itself without competitors."""
    by = {(r["workload"], r["competitors"], r["policy"]): r for r in rows}
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    lines = [
        "| workload | competing processes | "
        + " | ".join(f"{p} policy, s (train)" for p in policies)
        + " | new / old | new / new alone |",
        "|---|---|" + "---|" * (len(policies) + 2),
    ]
    for name, k in dict.fromkeys((r["workload"], r["competitors"]) for r in rows):
        cells = [by[name, k, p] for p in policies]
        new, alone = by[name, k, "new"], by[name, 0, "new"]
        lines.append(
            f"| {name} | {k} | "
            + " | ".join(f"{c['seconds']:.1f} ({c['train_seconds']:.1f})" for c in cells)
            + f" | {new['seconds'] / by[name, k, 'old']['seconds']:.2f}"
            + f" | {new['seconds'] / alone['seconds']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed busy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--default", nargs="*", default=[], help="overrides of the default cell")
    parser.add_argument("--cifar-train", type=int, default=5000)
    parser.add_argument("--cifar-test", type=int, default=10000, help="test images evaluated")
    parser.add_argument("--cifar-epochs", type=int, default=1)
    parser.add_argument(
        "--workloads", nargs="+", choices=("default", "cifar"), default=["default", "cifar"]
    )
    parser.add_argument("--policies", nargs="+", choices=tuple(POLICIES), default=["old", "new"])
    parser.add_argument("--out", default="busy.json")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.competitors) < 0 or args.cifar_train < 10:
        parser.error(
            f"--repeats {args.repeats}, --competitors {args.competitors}, --cifar-train "
            f"{args.cifar_train}: at least 1 repeat, no negative count, 10 examples"
        )
    if not {"old", "new"} <= set(args.policies) or 0 not in args.competitors:
        parser.error(
            f"--policies {' '.join(args.policies)} --competitors {args.competitors}: the table "
            "compares new with old and with itself alone; give old, new and 0 competitors"
        )
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="busy-") as work:
        rows = measure(args, Path(work))
    lines = report(rows)
    print("\n".join(lines))
    print(f"1-min load before: {load_before:.2f}, after: {_load():.2f}")
    payload = {"args": vars(args), "load_1min_before": load_before, "results": rows}
    write_json(args.out, {**payload, "table": lines})


def _load() -> float:
    return os.getloadavg()[0]
