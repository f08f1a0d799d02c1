"""Data loading: every loader on tiny files in its real format, the real data sets through
PRUNEBENCH_DATA, the cache, stratified splits and every error a user can meet."""

import gzip
import hashlib
import pickle
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback import md5, serve
from omegaconf import OmegaConf
from PIL import Image
from scipy.io import savemat

from benchmarks.data import channel_stats, dataset_names, load_dataset, stratified_split
from benchmarks.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parent.parent / "conf"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def preset(name: str, **overrides: object) -> dict:
    """A data config as Hydra composes it: the shared defaults, then the group file."""
    cfg = OmegaConf.load(CONF / "config.yaml")
    cfg.data = OmegaConf.merge(cfg.data, OmegaConf.load(CONF / "data" / f"{name}.yaml"), overrides)
    return OmegaConf.to_container(cfg.data, resolve=True)


def sha256(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


# --- digits, splits and subsamples ---------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits"})


def test_digits_shapes_dtypes_and_split(digits):
    assert digits.train_x.shape == (1437, 1, 8, 8)
    assert digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert digits.train_x.is_contiguous() and digits.test_x.is_contiguous()
    assert digits.classes == tuple("0123456789")
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, (8, 8))
    assert int(digits.train_x.max()) == 255
    assert torch.bincount(digits.test_y).tolist() == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]


def test_digits_are_sklearns_scaled_to_0_255_and_split_with_seed_0(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    scale = torch.tensor([round(v * 255 / 16) for v in range(17)], dtype=torch.uint8)
    x = scale[torch.from_numpy(bunch.images).long()][:, None]
    y = torch.from_numpy(bunch.target).long()
    train, test = stratified_split(y, 360, seed=0)
    assert torch.equal(digits.train_x, x[train]) and torch.equal(digits.train_y, y[train])
    assert torch.equal(digits.test_x, x[test]) and torch.equal(digits.test_y, y[test])


def test_digits_is_deterministic_and_fingerprints_its_content(digits):
    again = load_dataset({"name": "digits"})
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    assert again.fingerprint == digits.fingerprint
    assert digits.fingerprint == sha256(
        digits.train_x, digits.train_y, digits.test_x, digits.test_y
    )


def test_mean_and_std_are_of_the_training_pixels(digits):
    x = digits.train_x.double() / 255
    assert digits.mean == pytest.approx([x.mean().item()], abs=1e-12)
    assert digits.std == pytest.approx([x.std(unbiased=False).item()], abs=1e-12)


def test_stratified_split_uses_largest_remainder_counts():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100)]
    for size, expected in [(10, [5, 3, 2]), (0.25, [13, 7, 5]), (7, [4, 2, 1])]:
        rest, part = stratified_split(labels, size, seed=3)
        assert torch.bincount(labels[part], minlength=3).tolist() == expected
        assert rest.dtype == part.dtype == torch.int64
        assert torch.equal(part, part.sort().values) and torch.equal(rest, rest.sort().values)
        assert torch.equal(torch.cat([rest, part]).sort().values, torch.arange(100))


def test_stratified_split_is_seeded():
    labels = torch.arange(200) % 7 + 3
    first = stratified_split(labels, 0.3, seed=1)[1]
    assert torch.equal(first, stratified_split(labels, 0.3, seed=1)[1])
    assert not torch.equal(first, stratified_split(labels, 0.3, seed=2)[1])
    assert first.numel() == 60


@pytest.mark.parametrize("size", [0, 100, -1, 0.0, 1.0, 1.5, 0.001, True, "10", None])
def test_stratified_split_rejects_sizes_out_of_range(size):
    with pytest.raises(ConfigError, match=r"\[1, 99\].*\(0, 1\)") as err:
        stratified_split(torch.arange(100) % 4, size, seed=0)
    assert repr(size) in str(err.value)


def test_max_train_and_max_test_take_stratified_subsamples_in_order(digits):
    ds = load_dataset({"name": "digits", "max_train": 100, "max_test": 50, "subset_seed": 4})
    train = stratified_split(digits.train_y, 100, seed=4)[1]
    test = stratified_split(digits.test_y, 50, seed=4)[1]
    assert torch.equal(ds.train_x, digits.train_x[train]) and torch.equal(
        ds.test_y, digits.test_y[test]
    )
    assert torch.bincount(ds.train_y).tolist() == [10] * 10
    assert ds.fingerprint == sha256(ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    assert ds.fingerprint != digits.fingerprint
    assert (ds.mean, ds.std) == (digits.mean, digits.std)
    other = load_dataset({"name": "digits", "max_train": 100, "subset_seed": 5})
    assert not torch.equal(other.train_x, ds.train_x)


def test_max_train_of_the_whole_set_is_the_full_data(digits):
    ds = load_dataset({"name": "digits", "max_train": 1437, "max_test": None})
    assert ds.fingerprint == digits.fingerprint


@pytest.mark.parametrize("limit", [0, 1438, 1.5, True, "100"])
def test_max_train_out_of_range_is_a_config_error(limit):
    with pytest.raises(ConfigError, match=r"data\.max_train=.*\[1, 1437\]"):
        load_dataset({"name": "digits", "max_train": limit})


def test_unknown_name_lists_the_data_sets():
    with pytest.raises(ConfigError, match=r"unknown data set 'cifar11'.*fashion_mnist"):
        load_dataset({"name": "cifar11"})
    assert {
        "digits",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "svhn",
        "imagefolder",
        "cinic10",
        "tiny_imagenet",
    } <= set(dataset_names())


def test_label_names_the_data_set(digits):
    assert load_dataset({"name": "digits", "label": "tiny_digits"}).name == "tiny_digits"
    assert digits.name == "digits"


AUGMENT = {
    "digits": (0, False),
    "mnist": (0, False),
    "fashion_mnist": (0, False),
    "cifar10": (4, True),
    "cifar100": (4, True),
    "cifar10_jpg": (4, True),
    "svhn": (4, False),
    "imagefolder": (0, False),
    "cinic10": (4, True),
    "tiny_imagenet": (8, True),
    "imagenet32": (4, True),
    "imagenet64": (8, True),
    "imagenet": (8, True),
}


@pytest.mark.parametrize("group", sorted(AUGMENT))
def test_config_group_files(group):
    text = (CONF / "data" / f"{group}.yaml").read_text()
    assert text.startswith("# ")
    cfg = preset(group)
    assert cfg["name"] in dataset_names()
    assert (cfg["augment"]["crop_padding"], cfg["augment"]["flip"]) == AUGMENT[group]
    assert sorted(p.stem for p in (CONF / "data").glob("*.yaml")) == sorted(AUGMENT)


# --- MNIST-format files ----------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def fake_mnist(folder: Path, suffix: str = ".gz") -> list[Path]:
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (20, 4, 4)),
        np.arange(20) % 10,
        rng.integers(0, 256, (10, 4, 4)),
        np.arange(10),
    ]
    paths = [folder / (name + suffix) for name in MNIST_FILES]
    for path, array in zip(paths, arrays, strict=True):
        write_idx(path, array)
    return paths


def mnist_cfg(root: Path, cache: Path, **kw: object) -> dict:
    return {"name": "mnist", "root": str(root), "cache_dir": str(cache), **kw}


def test_mnist_reads_idx_files_in_every_layout(tmp_path):
    fake_mnist(tmp_path / "b" / "MNIST" / "raw", suffix="")
    fake_mnist(tmp_path / "c")
    fake_mnist(tmp_path / "a" / "mnist")
    debian = load_dataset(mnist_cfg(tmp_path / "a", tmp_path / "cache"))
    for root in ("b", "c"):
        ds = load_dataset(mnist_cfg(tmp_path / root, tmp_path / "cache"))
        assert ds.fingerprint == debian.fingerprint
    assert debian.train_x.shape == (20, 1, 4, 4) and debian.test_x.shape == (10, 1, 4, 4)
    assert debian.test_y.tolist() == list(range(10))


@pytest.fixture
def mnist_root(tmp_path):
    fake_mnist(tmp_path / "mnist")
    return tmp_path


def test_download_fetches_torchvisions_mnist_files_and_reads_its_raw_layout(tmp_path, monkeypatch):
    import torchvision.datasets

    with serve(tmp_path / "www") as mirror:
        files = fake_mnist(mirror.path_of(torchvision.datasets.MNIST.mirrors[0]))
        resources = [(f.name, md5(f)) for f in files]
        monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
        ds = load_dataset(
            mnist_cfg(tmp_path / "data", tmp_path / "c", download=True, mirror=mirror.url)
        )
    assert ds.train_x.shape == (20, 1, 4, 4) and ds.test_y.tolist() == list(range(10))
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f.name for f in files)


@pytest.mark.parametrize(
    ("name", "first_file"),
    [
        ("fashion_mnist", "fashion-mnist/train-images-idx3-ubyte.gz"),
        ("mnist", "mnist/train-images-idx3-ubyte.gz"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_missing_files_say_where_and_how_to_get_them(tmp_path, name, first_file):
    with pytest.raises(DataError) as err:
        load_dataset({"name": name, "root": str(tmp_path), "cache_dir": str(tmp_path / "c")})
    message = str(err.value)
    assert message.startswith(f"{name}: data files not found")
    assert str(tmp_path / first_file) in message
    for hint in (
        "data.download=auto",
        "data.download=true",
        "data.root",
        "PRUNEBENCH_DATA",
        "internet",
    ):
        assert hint in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"plain text"])
def test_corrupt_gzip_is_named(mnist_root, tmp_path, damage):
    bad = mnist_root / "mnist" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(DataError, match=re.escape(str(bad)) + r": not a valid gzip file"):
        load_dataset(mnist_cfg(mnist_root, tmp_path / "cache"))


def test_wrong_idx_magic_is_named(mnist_root, tmp_path):
    swapped = mnist_root / "mnist" / "train-images-idx3-ubyte.gz"
    shutil.copy(mnist_root / "mnist" / "train-labels-idx1-ubyte.gz", swapped)
    with pytest.raises(
        DataError, match=re.escape(str(swapped)) + r": not an IDX images file .*2049.*2051"
    ):
        load_dataset(mnist_cfg(mnist_root, tmp_path / "cache"))


def test_truncated_idx_is_named(mnist_root, tmp_path):
    cut = mnist_root / "mnist" / "train-images-idx3-ubyte.gz"
    cut.write_bytes(gzip.compress(gzip.decompress(cut.read_bytes())[:-5]))
    with pytest.raises(
        DataError,
        match=re.escape(str(cut)) + r": IDX header says .*336 bytes.*331 bytes.*truncated",
    ):
        load_dataset(mnist_cfg(mnist_root, tmp_path / "cache"))


def test_corrupt_cache_file_is_rebuilt(mnist_root, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset(mnist_cfg(mnist_root, cache))
    (cached,) = (cache / "data").glob("mnist-*.pt")
    cached.write_bytes(b"not a torch file")
    assert load_dataset(mnist_cfg(mnist_root, cache)).fingerprint == first.fingerprint
    assert torch.load(cached, weights_only=True)["fingerprint"] == first.fingerprint


def test_changed_source_files_are_decoded_again(mnist_root, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset(mnist_cfg(mnist_root, cache))
    write_idx(mnist_root / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(10)[::-1])
    second = load_dataset(mnist_cfg(mnist_root, cache))
    assert second.test_y.tolist() == list(range(10))[::-1]
    assert second.fingerprint != first.fingerprint
    assert len(list((cache / "data").glob("mnist-*.pt"))) == 2


# --- real Fashion-MNIST ------------------------------------------------------------------


@pytest.fixture(scope="session")
def fashion(data_root, data_cache_dir):
    return load_dataset(
        {"name": "fashion_mnist", "root": str(data_root), "cache_dir": str(data_cache_dir)}
    )


def test_fashion_mnist_from_the_debian_layout(fashion):
    assert fashion.train_x.shape == (60000, 1, 28, 28)
    assert fashion.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(fashion.train_y).tolist() == [6000] * 10
    assert torch.bincount(fashion.test_y).tolist() == [1000] * 10
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"
    assert fashion.mean == pytest.approx([0.2860], abs=1e-4)
    assert fashion.std == pytest.approx([0.3530], abs=1e-4)


def test_fashion_mnist_from_the_torchvision_layout_is_the_same(fashion, data_root, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        with gzip.open(data_root / "fashion-mnist" / f"{name}.gz") as src:
            (raw / name).write_bytes(src.read())
    ds = load_dataset(
        {"name": "fashion_mnist", "root": str(tmp_path), "cache_dir": str(tmp_path / "cache")}
    )
    assert ds.fingerprint == fashion.fingerprint
    assert (ds.mean, ds.std) == (fashion.mean, fashion.std)


# --- CIFAR and SVHN on tiny files in torchvision's formats ---------------------------------


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def cifar_batch(n: int, label_key: str, start: int) -> dict:
    data = (np.arange(n * 3072).reshape(n, 3072) + start) % 256
    return {"data": data.astype(np.uint8), label_key: [(start + i) % 10 for i in range(n)]}


def test_cifar10_reads_torchvision_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = [cifar_batch(3, "labels", 3 * i) for i in range(5)]
    for i, batch in enumerate(batches, 1):
        write_pickle(folder / f"data_batch_{i}", batch)
    write_pickle(folder / "test_batch", cifar_batch(4, "labels", 99))
    names = [f"c{i}" for i in range(10)]
    write_pickle(folder / "batches.meta", {"label_names": names})
    ds = load_dataset({"name": "cifar10", "root": str(tmp_path), "cache_dir": str(tmp_path / "c")})
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.classes == tuple(names)
    assert ds.train_y.tolist() == [i % 10 for i in range(15)]
    assert ds.train_x[4, 1, 0, 0] == batches[1]["data"][1, 1024]


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "train", {**cifar_batch(6, "fine_labels", 0), "coarse_labels": [0] * 6})
    write_pickle(folder / "test", cifar_batch(2, "fine_labels", 50))
    write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    ds = load_dataset({"name": "cifar100", "root": str(tmp_path), "cache_dir": str(tmp_path / "c")})
    assert ds.num_classes == 100 and ds.train_y.tolist() == list(range(6))


def test_bad_pickle_is_named(tmp_path):
    folder = tmp_path / "cifar-100-python"
    for name in ("train", "test", "meta"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x80\x04garbage")
    with pytest.raises(
        DataError, match=re.escape(str(folder / "train")) + r": not a readable CIFAR pickle"
    ):
        load_dataset({"name": "cifar100", "root": str(tmp_path), "cache_dir": str(tmp_path / "c")})


def test_svhn_reads_mat_files_and_maps_10_to_0(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 5)).astype(np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10], [9]])})
    savemat(tmp_path / "test_32x32.mat", {"X": x[..., :2], "y": np.array([[3], [10]])})
    ds = load_dataset({"name": "svhn", "root": str(tmp_path), "cache_dir": str(tmp_path / "c")})
    assert ds.train_y.tolist() == [0, 1, 2, 0, 9] and ds.test_y.tolist() == [3, 0]
    assert torch.equal(ds.train_x[3], torch.from_numpy(x[..., 3]).permute(2, 0, 1))


# --- ImageFolder trees --------------------------------------------------------------------


def make_tree(base: Path, sizes: dict[str, tuple[int, int]] | None = None, mode: str = "RGB"):
    """train/{cat,dog} x 3 images and test/{cat,dog} x 1; pixel value = 10*class + file."""
    sizes = sizes or {}
    for split, count in (("train", 3), ("test", 1)):
        for c, label in enumerate(("dog", "cat")):
            for i in reversed(range(count)):
                rel = f"{split}/{label}/{'abc'[i]}.png"
                folder = base / split / label
                folder.mkdir(parents=True, exist_ok=True)
                value = 10 * (1 - c) + i + (100 if split == "test" else 0)
                image = Image.new(
                    mode, sizes.get(rel, (5, 4)), value if mode == "L" else (value,) * 3
                )
                image.save(folder / f"{'abc'[i]}.png")
    (base / "train" / "cat" / "notes.txt").write_text("not an image")
    return base


def tree_cfg(path: Path, tmp_path: Path) -> dict:
    return {
        "name": "imagefolder",
        "path": str(path),
        "root": str(tmp_path),
        "cache_dir": str(tmp_path / "c"),
    }


def test_imagefolder_orders_by_class_then_file_name(tmp_path):
    ds = load_dataset(tree_cfg(make_tree(tmp_path / "tree"), tmp_path))
    assert ds.classes == ("cat", "dog")
    assert ds.train_x.shape == (6, 3, 4, 5) and ds.test_x.shape == (2, 3, 4, 5)
    assert ds.train_x[:, 0, 0, 0].tolist() == [0, 1, 2, 10, 11, 12]
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.tolist() == [0, 1]


@pytest.mark.parametrize("archive", ["tree.tar.gz", "tree.tgz", "tree.tar"])
@pytest.mark.parametrize("top", ["mytree", None])
def test_imagefolder_archive_equals_folder(tmp_path, archive, top):
    folder = make_tree(tmp_path / "tree")
    mode = "w:gz" if archive.endswith("gz") else "w"
    with tarfile.open(tmp_path / archive, mode) as tar:
        for split in ("test", "train"):
            tar.add(folder / split, arcname=f"{top}/{split}" if top else split)
    from_folder = load_dataset(tree_cfg(folder, tmp_path))
    assert load_dataset(tree_cfg(Path(archive), tmp_path)).fingerprint == from_folder.fingerprint


def test_grayscale_trees_have_one_channel(tmp_path):
    ds = load_dataset(tree_cfg(make_tree(tmp_path / "tree", mode="L"), tmp_path))
    assert ds.train_x.shape == (6, 1, 4, 5) and ds.train_x[:, 0, 0, 0].tolist()[:2] == [0, 1]


def test_mixed_gray_and_colour_images_become_rgb(tmp_path):
    folder = make_tree(tmp_path / "tree")
    Image.new("L", (5, 4), 77).save(folder / "train" / "cat" / "b.png")
    ds = load_dataset(tree_cfg(folder, tmp_path))
    assert ds.in_channels == 3 and ds.train_x[1, :, 0, 0].tolist() == [77, 77, 77]


def test_mixed_image_sizes_name_the_file_and_both_sizes(tmp_path):
    folder = make_tree(tmp_path / "tree", sizes={"train/dog/b.png": (7, 6)})
    bad = folder / "train" / "dog" / "b.png"
    with pytest.raises(DataError, match=re.escape(str(bad)) + r" is 7x6 but .* is 5x4"):
        load_dataset(tree_cfg(folder, tmp_path))


def test_undecodable_image_is_named(tmp_path):
    folder = make_tree(tmp_path / "tree")
    bad = folder / "test" / "dog" / "a.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=re.escape(str(bad)) + r": cannot decode image"):
        load_dataset(tree_cfg(folder, tmp_path))


def test_corrupt_tar_is_named(tmp_path):
    folder = make_tree(tmp_path / "tree")
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as tar:
        tar.add(folder / "train", arcname="train")
    data = (tmp_path / "t.tar.gz").read_bytes()
    (tmp_path / "t.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=re.escape(str(tmp_path / "t.tar.gz")) + r": not a readable tar archive"
    ):
        load_dataset(tree_cfg(Path("t.tar.gz"), tmp_path))


def test_train_and_test_must_share_classes(tmp_path):
    folder = make_tree(tmp_path / "tree")
    shutil.rmtree(folder / "test" / "dog")
    with pytest.raises(DataError, match=r"same non-empty class folders.*\['cat'\]"):
        load_dataset(tree_cfg(folder, tmp_path))


def test_imagefolder_needs_a_path_that_exists(tmp_path):
    cfg = tree_cfg(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"data\.path is not set"):
        load_dataset({**cfg, "path": None})
    with pytest.raises(
        DataError, match=re.escape(str(tmp_path / "nope.tar.gz")) + r" not found.*PRUNEBENCH_DATA"
    ):
        load_dataset({**cfg, "path": "nope.tar.gz", "label": "mine"})


# --- real CIFAR-10 (JPEG) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def cifar10_jpg(data_root, data_cache_dir):
    """The first load decodes 60,000 JPEGs (seconds); every later one reads the cache."""
    return load_dataset(preset("cifar10_jpg", cache_dir=str(data_cache_dir)))


def test_cifar10_jpg_from_the_archive(cifar10_jpg):
    ds = cifar10_jpg
    assert ds.name == "cifar10_jpg"
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.classes == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    )  # fmt: skip
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.mean == pytest.approx([0.4917, 0.4826, 0.4472], abs=1e-3)
    assert ds.mean == pytest.approx([0.49125, 0.48209, 0.44652], abs=1e-5)
    # The data README's statistics are over all 60,000 images, train and test together.
    everything = channel_stats(torch.cat([ds.train_x, ds.test_x]))
    assert everything[0] == pytest.approx([0.4917, 0.4826, 0.4472], abs=1e-4)
    assert everything[1] == pytest.approx([0.2452, 0.2427, 0.2606], abs=1e-4)


def test_cifar10_jpg_second_load_reads_the_cache(cifar10_jpg, data_cache_dir):
    first = cifar10_jpg
    written = {p: p.stat().st_mtime_ns for p in data_cache_dir.rglob("*") if p.is_file()}
    again = load_dataset(preset("cifar10_jpg", cache_dir=str(data_cache_dir)))
    # a decode would have rewritten its cache file (atomically: a new file, a new mtime)
    assert {p: p.stat().st_mtime_ns for p in data_cache_dir.rglob("*") if p.is_file()} == written
    assert again.fingerprint == first.fingerprint and torch.equal(again.test_x, first.test_x)


def test_cifar10_jpg_subsample_recomputes_the_fingerprint(cifar10_jpg, data_cache_dir):
    full = cifar10_jpg
    ds = load_dataset(preset("cifar10_jpg", cache_dir=str(data_cache_dir), max_train=1000))
    assert torch.bincount(ds.train_y).tolist() == [100] * 10
    assert ds.fingerprint == sha256(ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    assert ds.mean == full.mean


def test_flipped_bytes_in_the_cache_are_detected_and_rebuilt(mnist_root, tmp_path, caplog):
    cache = tmp_path / "cache"
    first = load_dataset(mnist_cfg(mnist_root, cache))
    (cached,) = (cache / "data").glob("mnist-*.pt")
    blob = bytearray(cached.read_bytes())
    at = blob.find(first.train_x.numpy().tobytes()) + 100  # inside the training images
    blob[at] ^= 0xFF
    cached.write_bytes(bytes(blob))
    damaged = torch.load(cached, weights_only=True)
    assert (
        sha256(damaged["train_x"], damaged["train_y"], damaged["test_x"], damaged["test_y"])
        != (damaged["fingerprint"])
    )  # the file still loads, with its old fingerprint: only the content check can tell

    again = load_dataset(mnist_cfg(mnist_root, cache))
    assert torch.equal(again.train_x, first.train_x) and again.fingerprint == first.fingerprint
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(cached) in warning and "rebuilding" in warning
    assert torch.equal(torch.load(cached, weights_only=True)["train_x"], first.train_x)
