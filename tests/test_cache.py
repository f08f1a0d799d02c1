"""Score artifacts: computed once under concurrency, never read half-written."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from patience import HUNG_AFTER_S

from benchmarks.cache import ScoreCache, read_artifact, write_artifact

WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from benchmarks.cache import ScoreCache

    cache_dir, log = sys.argv[1], sys.argv[2]

    def compute():
        with open(log, "a") as f:
            f.write("computed\\n")
        time.sleep(1.0)
        return {"scores": np.arange(5.0)}, {"seconds": 1.0}

    arrays, meta = ScoreCache(cache_dir).load_or_compute("test", {"k": 1}, compute)
    assert arrays["scores"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    print(meta["seconds"])
    """
)


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def test_two_concurrent_processes_compute_one_artifact_once(tmp_path):
    log = tmp_path / "log"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(log)], env=_env())
        for _ in range(2)
    ]
    assert [p.wait(timeout=HUNG_AFTER_S) for p in procs] == [0, 0]
    assert log.read_text().count("computed") == 1


def test_second_request_reuses_and_insufficient_artifact_recomputes(tmp_path):
    cache = ScoreCache(tmp_path)
    calls = []

    def compute(epoch):
        calls.append(epoch)
        return {"x": np.full(3, epoch)}, {"stop_epoch": epoch}

    cache.load_or_compute("dyn", {"a": 1}, lambda: compute(2))
    arrays, _ = cache.load_or_compute(
        "dyn", {"a": 1}, lambda: compute(2), lambda m: m["stop_epoch"] >= 1
    )
    assert calls == [2] and arrays["x"].tolist() == [2, 2, 2]
    cache.load_or_compute("dyn", {"a": 1}, lambda: compute(5), lambda m: m["stop_epoch"] >= 5)
    assert calls == [2, 5]
    cache.load_or_compute("dyn", {"a": 2}, lambda: compute(1))
    assert calls == [2, 5, 1]


def test_a_corrupt_artifact_is_recomputed(tmp_path):
    cache = ScoreCache(tmp_path)
    path = cache.path("t", {"a": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert read_artifact(path) is None
    arrays, _ = cache.load_or_compute("t", {"a": 1}, lambda: ({"x": np.ones(2)}, {}))
    assert arrays["x"].tolist() == [1.0, 1.0]


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from benchmarks.cache import write_artifact

    path = Path(sys.argv[1])
    big = {"x": np.random.default_rng(0).random(20_000_000)}
    print("writing", flush=True)
    while True:
        write_artifact(path, big, {"n": 1})
    """
)


def test_kill_9_mid_write_leaves_the_previous_artifact_whole(tmp_path):
    path = tmp_path / "a.npz"
    write_artifact(path, {"x": np.arange(3.0)}, {"n": 0})
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)], env=_env(), stdout=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    arrays, meta = read_artifact(path)
    assert meta["n"] in (0, 1)
    assert arrays["x"].size in (3, 20_000_000)


def test_an_artifact_of_another_request_copied_over_one_is_recomputed(tmp_path, caplog):
    cache = ScoreCache(tmp_path)
    for a in (1, 2):
        cache.load_or_compute("dyn", {"a": a}, lambda a=a: ({"x": np.full(3, a)}, {}))
    mine, other = cache.path("dyn", {"a": 1}), cache.path("dyn", {"a": 2})
    shutil.copy(other, mine)  # a valid file, but of material {"a": 2}

    arrays, meta = cache.load_or_compute("dyn", {"a": 1}, lambda: ({"x": np.full(3, 1)}, {}))
    assert arrays["x"].tolist() == [1, 1, 1] and meta["material"] == {"a": 1}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(mine) in warning and "recomputing" in warning
    stored, meta = read_artifact(mine)
    assert stored["x"].tolist() == [1, 1, 1] and meta["material"] == {"a": 1}
    assert read_artifact(other)[0]["x"].tolist() == [2, 2, 2]
