"""The peers' data sets on tiny files written in their official formats: CINIC-10's
train/valid/test tree, Tiny ImageNet's zip with val_annotations.txt, downsampled ImageNet's
npz batches, ImageNet's train/val ImageFolder decoded at a resolution."""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback import md5, serve
from omegaconf import OmegaConf
from PIL import Image

from benchmarks.data import (
    cinic,
    decode,
    downsampled,
    load_dataset,
    stratified_split,
    tiny_imagenet,
)
from benchmarks.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parent.parent / "conf"


def preset(name: str, **overrides: object) -> dict:
    cfg = OmegaConf.load(CONF / "config.yaml")
    cfg.data = OmegaConf.merge(cfg.data, OmegaConf.load(CONF / "data" / f"{name}.yaml"), overrides)
    return OmegaConf.to_container(cfg.data, resolve=True)


def sha256(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def png(value: int, size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 255 - value)).save(
        out, "PNG"
    )
    return out.getvalue()


# --- CINIC-10 --------------------------------------------------------------------------------

CINIC = {"train": 3, "valid": 2, "test": 1}
CINIC_CLASSES = ("airplane", "cat")


def cinic_members() -> dict[str, bytes]:
    """split/class/file.png; pixel value = 100*split + 10*class + file (one grey image)."""
    members = {}
    for s, (split, count) in enumerate(CINIC.items()):
        for c, label in enumerate(CINIC_CLASSES):
            for i in range(count):
                mode = "L" if (split, c, i) == ("train", 1, 0) else "RGB"
                members[f"{split}/{label}/n{i}.png"] = png(100 * s + 10 * c + i, (32, 32), mode)
    return members


def write_cinic_tar(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in sorted(cinic_members().items(), reverse=True):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def write_cinic_folder(folder: Path) -> Path:
    for name, blob in cinic_members().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    return folder


def cinic_cfg(tmp_path: Path, **kw: object) -> dict:
    return preset("cinic10", root=str(tmp_path), cache_dir=str(tmp_path / "c"), **kw)


def test_cinic10_archive_merges_valid_into_training_in_class_order(tmp_path):
    write_cinic_tar(tmp_path / "CINIC-10.tar.gz")
    ds = load_dataset(cinic_cfg(tmp_path))
    assert ds.classes == CINIC_CLASSES
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.test_x.shape == (2, 3, 32, 32)
    # train (class 0: n0..n2, class 1: n0..n2), then valid (class 0: n0, n1, class 1: n0, n1)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    assert ds.train_x[:, 0, 0, 0].tolist() == [0, 1, 2, 10, 11, 12, 100, 101, 110, 111]
    assert ds.train_x[3, :, 0, 0].tolist() == [10, 10, 10]  # the grey image, as RGB
    assert ds.test_x[:, 0, 0, 0].tolist() == [200, 210] and ds.test_y.tolist() == [0, 1]
    assert ds.val_index is None
    assert ds.fingerprint == sha256(ds.train_x, ds.train_y, ds.test_x, ds.test_y)


def test_cinic10_valid_as_the_validation_split(tmp_path):
    write_cinic_tar(tmp_path / "CINIC-10.tar.gz")
    ds = load_dataset(cinic_cfg(tmp_path, valid="val"))
    assert ds.val_index.tolist() == [6, 7, 8, 9]
    assert ds.train_x[ds.val_index, 0, 0, 0].tolist() == [100, 101, 110, 111]
    sub = load_dataset(cinic_cfg(tmp_path, valid="val", max_train=5, subset_seed=1))
    kept = stratified_split(ds.train_y, 5, 1)[1]
    assert sub.val_index.tolist() == [i for i, k in enumerate(kept.tolist()) if k >= 6]
    with pytest.raises(ConfigError, match=r"data\.valid='both'.*train.*val"):
        load_dataset(cinic_cfg(tmp_path, valid="both"))


def test_cinic10_folder_equals_archive(tmp_path):
    write_cinic_tar(tmp_path / "CINIC-10.tar.gz")
    folder = write_cinic_folder(tmp_path / "CINIC-10")
    from_folder = load_dataset(cinic_cfg(tmp_path, path=str(folder)))
    assert from_folder.fingerprint == load_dataset(cinic_cfg(tmp_path)).fingerprint


def test_cinic10_download_checks_the_layout_without_a_published_checksum(tmp_path, monkeypatch):
    with serve(tmp_path / "www") as mirror:
        write_cinic_tar(mirror.path_of(cinic.CINIC_URLS[0]))
        root = tmp_path / "data"
        with pytest.raises(
            DataError,
            match=r"holds \{'train': 6, 'valid': 4, 'test': 2\} images, the official one",
        ):
            load_dataset(cinic_cfg(root, mirror=mirror.url))
        assert [p.name for p in root.iterdir()] == [".cinic10.download.lock"]
        monkeypatch.setattr(cinic, "CINIC_COUNTS", {"train": 6, "valid": 4, "test": 2})
        ds = load_dataset(cinic_cfg(root, mirror=mirror.url))
    assert ds.train_x.shape[0] == 10 and (root / "CINIC-10.tar.gz").is_file()


# --- Tiny ImageNet ---------------------------------------------------------------------------

TINY_WNIDS = ("n02", "n01", "n03")  # wnids.txt is not sorted; classes are


def write_tiny_zip(path: Path) -> Path:
    """train/<wnid>/images/<wnid>_<i>.JPEG x2, val/images/val_<i>.JPEG + val_annotations.txt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    top = "tiny-imagenet-200"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/wnids.txt", "\n".join(TINY_WNIDS) + "\n")
        for wnid in TINY_WNIDS:
            c = sorted(TINY_WNIDS).index(wnid)
            zf.writestr(f"{top}/train/{wnid}/{wnid}_boxes.txt", "")
            for i in range(2):
                zf.writestr(f"{top}/train/{wnid}/images/{wnid}_{i}.JPEG", png(40 * c + i, (64, 64)))
        annotations = []
        for i, wnid in enumerate(("n03", "n01", "n01", "n02")):
            c = sorted(TINY_WNIDS).index(wnid)
            zf.writestr(f"{top}/val/images/val_{i}.JPEG", png(200 + 10 * c + i, (64, 64), "L"))
            annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
        zf.writestr(f"{top}/val/val_annotations.txt", "\n".join(annotations) + "\n")
        zf.writestr(f"{top}/test/images/test_0.JPEG", png(7, (64, 64)))
    return path


def tiny_cfg(tmp_path: Path, **kw: object) -> dict:
    return preset("tiny_imagenet", root=str(tmp_path), cache_dir=str(tmp_path / "c"), **kw)


def test_tiny_imagenet_regroups_val_by_its_annotations(tmp_path):
    write_tiny_zip(tmp_path / "tiny-imagenet-200.zip")
    ds = load_dataset(tiny_cfg(tmp_path))
    assert ds.classes == ("n01", "n02", "n03")
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.test_x.shape == (4, 3, 64, 64)
    assert ds.train_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.train_x[:, 0, 0, 0].tolist() == [0, 1, 40, 41, 80, 81]
    # val_1, val_2 are n01; val_3 n02; val_0 n03 (sorted by class, then file)
    assert ds.test_y.tolist() == [0, 0, 1, 2]
    assert ds.test_x[:, 0, 0, 0].tolist() == [201, 202, 213, 220]
    assert ds.test_x[0, :, 5, 5].tolist() == [201] * 3  # grey JPEGs become RGB
    assert ds.fingerprint == sha256(ds.train_x, ds.train_y, ds.test_x, ds.test_y)


def test_tiny_imagenet_folder_equals_zip(tmp_path):
    archive = write_tiny_zip(tmp_path / "tiny-imagenet-200.zip")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unpacked")
    folder = tmp_path / "unpacked" / "tiny-imagenet-200"
    from_folder = load_dataset(tiny_cfg(tmp_path, path=str(folder)))
    assert from_folder.fingerprint == load_dataset(tiny_cfg(tmp_path)).fingerprint


def test_tiny_imagenet_decodes_in_blocks_into_one_array(tmp_path, monkeypatch):
    """Decoded by worker processes, DECODE_BLOCK files at a time: the same tensors as the
    one-block decode, and the peak (tracemalloc: this process's numpy and Python buffers) is
    the tensors plus about one block, not the list-then-stack copies of the decoded images."""
    import tracemalloc

    wnids = [f"n{c:02d}" for c in range(3)]
    per_class, top = 200, "tiny-imagenet-200"
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for c, wnid in enumerate(wnids):
            for i in range(per_class):
                zf.writestr(f"{top}/train/{wnid}/images/{wnid}_{i:03d}.JPEG", png(c + i, (64, 64)))
        for c in range(3):
            zf.writestr(f"{top}/val/images/val_{c}.JPEG", png(200 + c, (64, 64), "L"))
        annotations = "".join(f"val_{c}.JPEG\t{w}\n" for c, w in enumerate(wnids))
        zf.writestr(f"{top}/val/val_annotations.txt", annotations)
    monkeypatch.setattr(decode, "DECODE_BLOCK", 64)
    tracemalloc.start()
    try:
        ds = tiny_imagenet._decode_tiny("tiny", tiny_imagenet._zip_members(archive, top), "many")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.train_y.tolist() == [c for c in range(3) for _ in range(per_class)]
    assert ds.train_x[:, 0, 0, 0].tolist() == [c + i for c in range(3) for i in range(per_class)]
    assert ds.test_y.tolist() == [0, 1, 2] and ds.test_x[:, :, 9, 9].tolist() == [
        [200] * 3,
        [201] * 3,
        [202] * 3,
    ]
    monkeypatch.setattr(decode, "DECODE_BLOCK", 4096)
    whole = tiny_imagenet._decode_tiny("tiny", tiny_imagenet._zip_members(archive, top), "many")
    assert whole.fingerprint == ds.fingerprint
    # a block in flight: its files, its decoded images as they come back and are unpickled
    # (measured 2.8 MB above the tensors; the list-and-stack decode held 2 more copies: 15 MB)
    tensors = ds.train_x.numel() + ds.test_x.numel() + 8 * (ds.train_y.numel() + 3)
    block = 64 * 3 * 64 * 64
    assert tensors < peak <= tensors + 4 * block + (1 << 20), (peak, tensors)


def test_tiny_imagenet_images_of_another_size_are_refused(tmp_path):
    archive = write_tiny_zip(tmp_path / "tiny-imagenet-200.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("tiny-imagenet-200/train/n03/images/n03_9.JPEG", png(1, (32, 32)))
    with pytest.raises(DataError, match=r"n03_9.JPEG is 32x32 but .*n01_0.JPEG is 64x64"):
        load_dataset(tiny_cfg(tmp_path))


def test_tiny_imagenet_auto_download_checks_the_md5(tmp_path, monkeypatch):
    with serve(tmp_path / "www") as mirror:
        served = write_tiny_zip(mirror.path_of(tiny_imagenet.TINY_URL))
        with pytest.raises(DataError, match=r"not the published 90528d7ca1a48142e341f4ef8d21d0de"):
            load_dataset(tiny_cfg(tmp_path / "data", mirror=mirror.url))
        monkeypatch.setattr(tiny_imagenet, "TINY_MD5", md5(served))
        ds = load_dataset(tiny_cfg(tmp_path / "data", mirror=mirror.url))
    assert ds.num_classes == 3 and (tmp_path / "data" / "tiny-imagenet-200.zip").is_file()


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def test_cinic10_valid_is_the_runs_validation_split(tmp_path):
    from benchmarks.pipeline import prepare

    write_cinic_tar(tmp_path / "CINIC-10.tar.gz")
    where = [f"data.root={tmp_path}", f"data.cache_dir={tmp_path / 'c'}"]
    prep = prepare(compose("data=cinic10", "data.valid=val", *where), torch.device("cpu"))
    assert prep.val_index.tolist() == [6, 7, 8, 9] and prep.train_index.tolist() == list(range(6))
    assert prep.val.images[:, 0, 0, 0].tolist() == [100, 101, 110, 111]
    merged = prepare(compose("data=cinic10", *where), torch.device("cpu"))
    assert merged.train_index.tolist() == list(range(10)) and merged.val_index.size == 0
    with pytest.raises(ConfigError, match=r"data\.val_size=2 .*own \(data\.valid=val\)"):
        prepare(compose("data=cinic10", "data.valid=val", "data.val_size=2", *where), "cpu")


# --- downsampled ImageNet (npz batches) -----------------------------------------------------

DOWNSAMPLED = [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]


def write_npz_batches(folder: Path, size: int, per_batch: int = 40) -> list[dict]:
    """The official format: 'data' uint8 [N, 3*size*size] (R, G, B planes), 'labels' 1..1000,
    'mean'; train and val in two folders as their two zips unpack."""
    rng = np.random.default_rng(size)
    batches = []
    for i, name in enumerate(DOWNSAMPLED):
        sub = folder / ("val" if name == "val_data" else "train")
        sub.mkdir(parents=True, exist_ok=True)
        n = per_batch + i  # batches differ in size, as the official last one does
        batch = {
            "data": rng.integers(0, 256, (n, 3 * size * size), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(1, 1001, n)],
        }
        np.savez_compressed(sub / f"{name}.npz", mean=batch["data"].mean(0), **batch)
        batches.append(batch)
    return batches


@pytest.mark.parametrize("size", [32, 64])
def test_downsampled_imagenet_reads_the_npz_batches(tmp_path, size):
    batches = write_npz_batches(tmp_path / f"imagenet{size}", size)
    ds = load_dataset(preset(f"imagenet{size}", root=str(tmp_path), cache_dir=str(tmp_path / "c")))
    n_train = sum(len(b["labels"]) for b in batches[:10])
    assert ds.train_x.shape == (n_train, 3, size, size) and ds.test_x.shape == (50, 3, size, size)
    assert ds.num_classes == 1000 and ds.classes[:2] == ("1", "2")
    labels = [v - 1 for b in batches[:10] for v in b["labels"]]
    assert ds.train_y.tolist() == labels and ds.test_y.tolist() == [
        v - 1 for v in batches[10]["labels"]
    ]
    first = batches[1]["data"][3]  # image 3 of batch 2: its R, G, B planes, row-major
    i = len(batches[0]["labels"]) + 3
    plane = size * size
    for c in range(3):
        assert ds.train_x[i, c].reshape(-1).tolist() == first[c * plane : (c + 1) * plane].tolist()
    assert ds.train_x[i, 1, 2, 5] == first[plane + 2 * size + 5]
    assert ds.fingerprint == sha256(ds.train_x, ds.train_y, ds.test_x, ds.test_y)


def test_downsampled_imagenet_class_names_from_map_clsloc(tmp_path):
    write_npz_batches(tmp_path / "imagenet32", 32, per_batch=2)
    cfg = preset("imagenet32", root=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert load_dataset(cfg).classes[-1] == "1000"
    wnids = [f"n{i:08d}" for i in range(1000)]
    lines = [f"{w} {i + 1} name_{i}" for i, w in enumerate(wnids)]
    (tmp_path / "imagenet32" / "map_clsloc.txt").write_text("\n".join(lines[::-1]) + "\n")
    assert load_dataset(cfg).classes == tuple(wnids)  # not the cached decode without it


def test_downsampled_imagenet_has_no_download_and_says_where_to_get_it(tmp_path):
    for download, start in [("auto", "data files not found"), (True, "data.download=true but")]:
        with pytest.raises(DataError) as err:
            load_dataset(preset("imagenet64", root=str(tmp_path), download=download))
        message = str(err.value)
        assert message.startswith(f"imagenet64: {start}") and "\n" not in message
        for hint in ("image-net.org", "Imagenet64_train_npz", "PRUNEBENCH_DATA"):
            assert hint in message
    assert not (tmp_path / "imagenet64").exists()


def test_npz_decode_peak_is_the_tensor_plus_one_batch(tmp_path):
    """tracemalloc sees every numpy buffer: the decode's peak above what it returns is at
    most one batch file's pixels (plus small change), never a second copy of the data."""
    import tracemalloc

    size, per_batch = 32, 400
    write_npz_batches(tmp_path / "imagenet32", size, per_batch=per_batch)
    files = sorted(
        (tmp_path / "imagenet32").glob("*/*.npz"), key=lambda f: DOWNSAMPLED.index(f.stem)
    )
    tracemalloc.start()
    try:
        ds = downsampled._decode_downsampled("imagenet32", size, files, ("c",) * 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tensors = ds.train_x.numel() + ds.test_x.numel() + 8 * (ds.train_y.numel() + ds.test_y.numel())
    largest_batch = (per_batch + 9) * 3 * size * size
    assert tensors < peak <= tensors + largest_batch + (1 << 20), (peak, tensors, largest_batch)


# --- ImageNet-1k ImageFolder at a resolution -----------------------------------------------


def test_imagenet_folder_is_resized_and_centre_cropped_at_the_resolution(tmp_path):
    """Solid images stay their colour under any resize; a 24x12 image green in columns 3..20
    is green in 2..13 of 16 once the shorter side is 8, so the centre 8x8 crop is all green."""
    root = tmp_path / "imagenet"
    for split, per_class in (("train", 2), ("val", 1)):
        for c, wnid in enumerate(("n02", "n01")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                value = 10 * c + i + (100 if split == "val" else 0)
                Image.new("RGB", (20 + 7 * i, 13), (value, value, value)).save(
                    folder / f"{i}.JPEG", "PNG"
                )
    bands = Image.new("RGB", (24, 12), (255, 0, 0))
    bands.paste((0, 255, 0), (3, 0, 21, 12))
    bands.save(root / "train" / "n01" / "2.png")
    ds = load_dataset(
        preset("imagenet", root=str(tmp_path), cache_dir=str(tmp_path / "c"), resolution=8)
    )
    assert ds.classes == ("n01", "n02")
    assert ds.train_x.shape == (5, 3, 8, 8) and ds.test_x.shape == (2, 3, 8, 8)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1] and ds.test_y.tolist() == [0, 1]
    for i, value in enumerate([10, 11]):
        assert (ds.train_x[i] == value).all()
    assert (ds.train_x[2, 1] == 255).all() and (ds.train_x[2, 0] == 0).all()
    assert ds.test_x[:, 0, 0, 0].tolist() == [110, 100]
    assert ds.fingerprint == sha256(ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    other = load_dataset(
        preset("imagenet", root=str(tmp_path), cache_dir=str(tmp_path / "c"), resolution=12)
    )
    assert other.image_size == (12, 12)
    with pytest.raises(ConfigError, match=r"data\.resolution=4 must be an integer >= 8"):
        load_dataset(preset("imagenet", root=str(tmp_path), resolution=4))


def test_resolution_is_a_key_of_imagenet_only():
    from benchmarks.config_schema import validate

    validate(compose("data=imagenet", "data.resolution=112"))
    with pytest.raises(ConfigError, match=r"unknown key 'data\.resolution'"):
        validate(compose("data=cifar10", "+data.resolution=64"))
