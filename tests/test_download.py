"""data.download=auto for real, on loopback: a local HTTP server stands in for the internet
and serves tiny archives in the official layouts at the official URLs' paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision.datasets
from loopback import (
    CIFAR10_URL,
    CIFAR100_URL,
    cifar10_tarball,
    cifar100_tarball,
    md5,
    md5_patch,
    serve,
)
from patience import HUNG_AFTER_S

from benchmarks.data import load_dataset
from benchmarks.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """The loopback mirror with both CIFAR tarballs, their MD5s given to torchvision."""
    with serve(tmp_path / "www") as server:
        for name, url, write in (
            ("CIFAR10", CIFAR10_URL, cifar10_tarball),
            ("CIFAR100", CIFAR100_URL, cifar100_tarball),
        ):
            monkeypatch.setattr(
                getattr(torchvision.datasets, name), "tgz_md5", md5(write(server.path_of(url)))
            )
        yield server


def cfg(root: Path, mirror_url: str, name: str = "cifar10", **kw: object) -> dict:
    return {
        "name": name,
        "root": str(root),
        "cache_dir": str(root.parent / "cache"),
        "download": "auto",
        "mirror": mirror_url,
        **kw,
    }


def leftovers(root: Path) -> list[str]:
    """What a download left in the data root besides its lock file."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".download.lock"))


def test_auto_downloads_verifies_and_decodes(tmp_path, mirror):
    root = tmp_path / "data"
    ds = load_dataset(cfg(root, mirror.url))
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.train_y[:3].tolist() == [1, 2, 3]
    assert mirror.gets(CIFAR10_URL) == 1
    assert leftovers(root) == ["cifar-10-batches-py"]  # unpacked; no archive, no scratch
    again = load_dataset(cfg(root, mirror.url))
    assert mirror.gets(CIFAR10_URL) == 1 and again.fingerprint == ds.fingerprint
    hundred = load_dataset(cfg(root, mirror.url, name="cifar100"))
    assert hundred.num_classes == 100 and hundred.train_x.shape == (200, 3, 32, 32)


def test_a_killed_downloads_scratch_folder_is_removed(tmp_path, mirror):
    root = tmp_path / "data"
    (root / ".cifar10-download-killed" / "unpacked").mkdir(parents=True)
    load_dataset(cfg(root, mirror.url))
    assert leftovers(root) == ["cifar-10-batches-py"]


def test_mirror_from_the_environment(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_MIRROR", mirror.url)
    load_dataset(cfg(tmp_path / "data", None))
    assert mirror.gets(CIFAR10_URL) == 1


def test_download_false_never_asks_the_network(tmp_path, mirror):
    with pytest.raises(DataError, match=r"cifar10: data files not found.*data\.download=auto"):
        load_dataset(cfg(tmp_path / "data", mirror.url, download=False))
    assert sum(mirror.hits.values()) == 0


def test_wrong_checksum_is_one_line_and_keeps_nothing(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_dataset(cfg(root, mirror.url))
    message = str(err.value)
    assert "\n" not in message and message.startswith("cifar10: ")
    assert f"not the published {'0' * 32}" in message and "PRUNEBENCH_DATA" in message
    assert leftovers(root) == []


def test_server_down_is_one_line_and_keeps_nothing(tmp_path):
    with serve(tmp_path / "www") as gone:
        url = gone.url
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_dataset(cfg(root, url))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cifar10: download failed (")
    assert "refused" in message.lower()
    for way in ("internet", "data.root", "PRUNEBENCH_DATA"):
        assert way in message
    assert leftovers(root) == []


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_download_values_are_checked(tmp_path, value):
    with pytest.raises(ConfigError, match=r"data\.download=.*auto.*true.*false"):
        load_dataset({"name": "cifar10", "root": str(tmp_path), "download": value})


def subprocess_env(tmp_path: Path, mirror) -> dict:
    patch = md5_patch(
        tmp_path / "patch",
        {
            "CIFAR10": md5(mirror.path_of(CIFAR10_URL)),
            "CIFAR100": md5(mirror.path_of(CIFAR100_URL)),
        },
    )
    return {
        **os.environ,
        "PYTHONPATH": f"{patch}{os.pathsep}{ROOT}",
        "PRUNEBENCH_MIRROR": mirror.url,
        "PRUNEBENCH_DATA": str(tmp_path / "data"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "OMP_NUM_THREADS": "1",
    }


def test_two_processes_download_once(tmp_path, mirror):
    """Two tasks of an array start together; one downloads, the other waits and reads."""
    script = (
        "import sys; from benchmarks.data import load_dataset; "
        "print(load_dataset({'name': 'cifar10', 'root': sys.argv[1], 'download': 'auto', "
        "'cache_dir': sys.argv[2]}).fingerprint)"
    )
    env = subprocess_env(tmp_path, mirror)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "data"), str(tmp_path / f"c{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=HUNG_AFTER_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert mirror.gets(CIFAR10_URL) == 1


def test_headline_command_runs_as_typed_with_loopback_internet(tmp_path, mirror):
    """python run.py -m method=el2n,grand,random data=cifar10,cifar100 on an empty data root,
    the loopback mirror standing in for the internet; tiny training so that it takes seconds."""
    tiny = ["train.epochs=1", "score.epoch=1", "score.runs=1", "model.width=4"]
    args = ["-m", "method=el2n,grand,random", "data=cifar10,cifar100", *tiny]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args, f"hydra.sweep.dir={tmp_path}/multi"],
        cwd=tmp_path,
        env=subprocess_env(tmp_path, mirror),
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    cells = sorted((r["cell"]["data"], r["cell"]["method"]) for r in records)
    assert cells == sorted(
        (d, m) for d in ("cifar10", "cifar100") for m in ("el2n", "grand", "random")
    )
    assert all(r["status"] == "finished" for r in records)
    assert mirror.gets(CIFAR10_URL) == 1 and mirror.gets(CIFAR100_URL) == 1
