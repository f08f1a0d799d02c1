"""Streamed data (data.storage=stream): the same cell as in memory, reading only what is kept,
a store packed once and never trusted half-written, resumable, and one clear line for
plugins that want the whole training set as one tensor."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from benchmarks.config_schema import register
from benchmarks.data.pack import PackedStore
from benchmarks.data.stream import load_streamed
from benchmarks.data.transforms import crop_box, train_pixels
from benchmarks.errors import ConfigError, DataError
from benchmarks.models import build_model
from benchmarks.pipeline import prepare, run
from benchmarks.train import Checkpointing, TrainSettings, budget_steps, train
from methods import get_method

ROOT = Path(__file__).resolve().parent.parent
WNIDS = ("n01440764", "n01443537")


def write_tree(root: Path, per_class: int = 10, val: int = 3) -> Path:
    """An ImageNet-layout JPEG tree: two classes of noisy images of a few sizes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", val)):
        for c, wnid in enumerate(WNIDS):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (18 + i % 4, 24, 3), dtype=np.uint8)
                pixels[..., c] = 220
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def compose_cfg(tmp_path: Path, *overrides: str):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "data=imagenet",
                "data.resolution=16",
                f"data.root={tmp_path / 'data'}",
                f"cache.dir={tmp_path / 'cache'}",
                f"results.dir={tmp_path / 'results'}",
                "data.stream.workers=0",
                "model=mlp",
                "train.epochs=2",
                "train.batch_size=4",
                "score.runs=1",
                "device=cpu",
                *overrides,
            ],
        )


@pytest.fixture
def tree(tmp_path):
    write_tree(tmp_path / "data")
    return tmp_path


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]


@pytest.mark.parametrize("method", ["input_norm", "el2n", "deepfool", "grand"])
def test_streamed_scores_equal_the_in_memory_ones(tree, method):
    """Static methods reading raw pixels or a proxy: the same scores from the store."""
    scores = {}
    for storage in ("memory", "stream"):
        cfg = compose_cfg(
            tree, f"data.storage={storage}", "data.augment.crop_padding=2", "cache.scores=false"
        )
        prep = prepare(cfg, torch.device("cpu"))
        options = {"epoch": 1, "runs": 1} if method in ("el2n", "grand") else {}
        scores[storage] = get_method(method, options).score(prep.ctx)
        assert prep.ctx.data_fingerprint == prep.ds.fingerprint
    np.testing.assert_allclose(scores["stream"], scores["memory"], rtol=1e-6, atol=1e-7)


def test_streamed_cell_is_the_in_memory_cell(tree):
    """Same fingerprint, kept subset, run key and training curve (float tolerance)."""
    for storage in ("memory", "stream"):
        cfg = compose_cfg(
            tree, f"data.storage={storage}", "method=input_norm", "run.skip_completed=false"
        )
        run(cfg, progress=False)
    memory, streamed = records(tree)
    if memory["data"]["storage"]["mode"] == "stream":
        memory, streamed = streamed, memory
    assert streamed["data"]["storage"]["mode"] == "stream"
    assert streamed["run_key"] == memory["run_key"]
    assert streamed["data"]["fingerprint"] == memory["data"]["fingerprint"]
    assert streamed["data"]["mean"] == memory["data"]["mean"]
    kept = "kept_indices_sha256"
    assert streamed["selection"][kept] == memory["selection"][kept]
    for a, b in zip(streamed["curve"], memory["curve"], strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)


def test_a_ten_percent_subset_reads_only_its_examples(tmp_path, monkeypatch):
    write_tree(tmp_path / "data", per_class=20, val=1)
    ds = load_streamed(compose_cfg(tmp_path).data, torch.device("cpu"))
    read = []
    original = PackedStore.read

    def counted(self, split, i):
        read.append((split, i))
        return original(self, split, i)

    monkeypatch.setattr(PackedStore, "read", counted)
    kept = torch.tensor([3, 11, 25, 38])  # 10% of 40
    s = TrainSettings(epochs=3, batch_size=2, amp=False)
    model = build_model("mlp", 3, 2, (16, 16), (0.5,) * 3, (0.25,) * 3)
    train(model, ds.train.subset(kept), s, budget_steps(4, 4, s), order_seed=0)
    assert sorted(set(read)) == [("train", i) for i in kept.tolist()]
    assert len(read) == 3 * 4  # each kept example once per epoch, nothing else
    sizes = ds.store.index["train"]["length"]
    assert ds.train.decoder.bytes_read == 3 * int(sizes[kept.numpy()].sum())


PACK_ONCE = """
import sys, time
from pathlib import Path
import torch
from benchmarks.data import pack
from benchmarks.data.stream import load_streamed
from test_stream import compose_cfg

log = Path(sys.argv[2])
write = pack._write

def counted(folder, plan, workers):
    with log.open("a") as f:
        f.write("packed\\n")
    time.sleep(float(sys.argv[3]))
    write(folder, plan, workers)

pack._write = counted
ds = load_streamed(compose_cfg(Path(sys.argv[1])).data, torch.device("cpu"))
print(ds.fingerprint)
"""


def _packer(tmp_path: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    return subprocess.Popen(
        [sys.executable, "-c", PACK_ONCE, str(tmp_path), str(tmp_path / "packs.log"), str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_concurrent_jobs_pack_once(tree):
    first, second = _packer(tree, 2.0), _packer(tree, 2.0)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert (tree / "packs.log").read_text().count("packed") == 1
    assert outs[0][0].strip() == outs[1][0].strip() != ""


def test_a_killed_pack_leaves_nothing_a_rerun_trusts(tree):
    victim = _packer(tree, 30.0)
    log = tree / "packs.log"
    deadline = time.monotonic() + 300
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    packed = tree / "cache" / "packed"
    assert not [p for p in packed.iterdir() if (p / "manifest.json").exists()]
    ds = load_streamed(compose_cfg(tree).data, torch.device("cpu"))
    memory = prepare(compose_cfg(tree, "data.storage=memory"), torch.device("cpu")).ds
    assert ds.fingerprint == memory.fingerprint
    assert not list(packed.glob("*.partial"))


def test_a_corrupt_shard_is_one_line_naming_it_and_no_record(tree):
    ds = load_streamed(compose_cfg(tree).data, torch.device("cpu"))
    shard = ds.store.folder / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        run(compose_cfg(tree, "data.storage=stream", "method=input_norm"), progress=False)
    assert str(shard) in str(err.value) and "\n" not in str(err.value)
    assert records(tree) == []
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(DataError, match=str(shard)):
        load_streamed(compose_cfg(tree).data, torch.device("cpu"))


def test_resume_mid_epoch_gives_the_batches_of_an_uninterrupted_run(tree):
    """With 2 decoding workers reading ahead, and the papers' random crops."""
    cfg = compose_cfg(tree, "data.stream.workers=2", "data.stream.transform=crop")
    train_source = load_streamed(cfg.data, torch.device("cpu")).train
    s = TrainSettings(epochs=2, batch_size=4, amp=False)
    total = budget_steps(20, 20, s)

    def fresh():
        torch.manual_seed(0)
        return build_model("mlp", 3, 2, (16, 16), (0.5,) * 3, (0.25,) * 3)

    reference = fresh()
    train(reference, train_source, s, total, order_seed=4)

    class Killed(Exception):
        pass

    def die_at_step_7(step, idx, logits, y):
        if step == 7:
            raise Killed

    ckpt = Checkpointing(tree / "ckpt.pt", every_steps=3)
    with pytest.raises(Killed):
        train(fresh(), train_source, s, total, 4, on_batch=die_at_step_7, checkpointing=ckpt)
    resumed = fresh()
    train(resumed, train_source, s, total, order_seed=4, checkpointing=ckpt)
    assert ckpt.resumed_from_step == 6
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_crops_are_torchvisions_boxes_and_one_batch_whatever_the_workers(tree):
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = crop_box(40, 30, rng)
        assert left >= 0 and left + w <= 40 and top >= 0 and top + h <= 30
        assert 0.08 * 1200 - 40 <= w * h <= 1200 and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
    data = sorted((tree / "data" / "imagenet" / "train").glob("*/*.JPEG"))[0].read_bytes()
    once, again = train_pixels(data, "crop", 16, (5, 1)), train_pixels(data, "crop", 16, (5, 1))
    assert np.array_equal(once, again) and once.shape == (3, 16, 16)
    batches = []
    for workers in (0, 3):
        cfg = compose_cfg(tree, f"data.stream.workers={workers}", "data.stream.transform=crop")
        source = load_streamed(cfg.data, torch.device("cpu")).train
        batches.append(source.train_batch(torch.tensor([4, 0, 9, 13, 2]), seed=11))
    assert torch.equal(batches[0], batches[1]) and batches[0].shape == (5, 3, 16, 16)


def test_a_plugin_reading_train_x_on_streamed_data_is_one_line_exit_2_no_record(tree):
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tree / "results"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "data=imagenet",
            "data.resolution=16",
            f"data.root={tree / 'data'}",
            f"cache.dir={tree / 'cache'}",
            f"results.dir={tree / 'results'}",
            "data.storage=stream",
            "data.stream.workers=0",
            "model=mlp",
            "method=brightness",
            "device=cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "ctx.train_x" in x]
    assert "ctx.eval_batches()" in line
    assert records(tree) == []


def test_bad_storage_settings_are_named(tree):
    with pytest.raises(ConfigError, match="data.storage='disk'"):
        prepare(compose_cfg(tree, "data.storage=disk"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="data.stream.transform='random'"):
        prepare(compose_cfg(tree, "data.stream.transform=random"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="data.name=digits"):
        load_streamed({"name": "digits", "storage": "stream"}, torch.device("cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decode_gives_the_cpu_crops_up_to_the_resampling_kernel(tree):
    """The same crop boxes and flips as the CPU workers; pixels within a few levels."""
    cuda = torch.device("cuda")
    views = {}
    for decode in ("cpu", "cuda"):
        cfg = compose_cfg(tree, "data.stream.transform=crop", f"data.stream.decode={decode}")
        source = load_streamed(cfg.data, cuda).train
        source.augment = type(source.augment)()  # the crops alone
        idx = torch.arange(source.n, device=cuda)
        views[decode] = (
            source.train_batch(idx, seed=3).float(),
            torch.cat([x for _, x, _ in source.eval_batches(7)]).float(),
        )
    for cpu, gpu in zip(views["cpu"], views["cuda"], strict=True):
        assert cpu.shape == gpu.shape
        assert (cpu - gpu).abs().mean() < 4.0  # of 255: decoder and resampling kernel only


def test_read_ahead_of_a_sharded_plan_serves_each_process_its_part(tree):
    """Under many processes each reads ahead only its slice of the global batch, and gets
    the views the whole batch has at those rows."""
    cfg = compose_cfg(tree, "data.stream.workers=1", "data.stream.transform=crop")
    source = load_streamed(cfg.data, torch.device("cpu")).train
    plan = [(s, torch.arange(4 * s, 4 * s + 4)) for s in range(4)]

    def second_half(idx):
        return idx[2:], (2, 4)

    served = []
    for step, idx in source.prefetch(iter(plan), lambda s: 100 + s, shard=second_half):
        assert 100 + step in source._ready  # decoding before it is asked for
        served.append(source.train_batch(idx[2:], 100 + step, rows=(2, 4)))
    assert not source._ready
    for (step, idx), batch in zip(plan, served, strict=True):
        assert torch.equal(batch, source.train_batch(idx, 100 + step)[2:])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_slice_of_the_global_batch_gets_the_crops_of_its_rows(tree, workers):
    """A rank's slice (rows lo..hi of a global batch) is bitwise the whole batch's rows,
    decoded in one process; the worker count changes nothing."""
    crop = ("data.stream.transform=crop", "data.augment.flip=true", "data.augment.crop_padding=2")
    idx = torch.tensor([4, 0, 9, 13, 2, 17, 6])
    whole = load_streamed(compose_cfg(tree, *crop).data, torch.device("cpu")).train
    reference = whole.train_batch(idx, seed=11)
    cfg = compose_cfg(tree, f"data.stream.workers={workers}", *crop)
    source = load_streamed(cfg.data, torch.device("cpu")).train
    for lo, hi in ((0, 3), (3, 5), (5, 7)):
        part = source.train_batch(idx[lo:hi], seed=11, rows=(lo, idx.numel()))
        assert torch.equal(part, reference[lo:hi])


def test_gpu_decode_crops_a_slice_as_the_whole_batch(tree):
    """decode=cuda's crops (here on the CPU: the same code) follow the global row too."""
    pytest.importorskip("torchvision")
    from benchmarks.data import gpu_decode

    files = sorted((tree / "data" / "imagenet" / "train").glob("*/*.JPEG"))[:6]
    datas = [f.read_bytes() for f in files]
    cpu = torch.device("cpu")
    whole = gpu_decode.train_views(datas, "crop", 16, 5, cpu)
    for lo, hi in ((0, 2), (2, 6)):
        part = gpu_decode.train_views(datas[lo:hi], "crop", 16, 5, cpu, first=lo)
        assert torch.equal(part, whole[lo:hi])
