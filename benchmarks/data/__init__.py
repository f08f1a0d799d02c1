"""Data sets as whole uint8 tensors in memory, from files in the layouts users already have.

One module per source family registers its loader in DATASETS (digits, idx, cifar, svhn,
imagefolder, cinic, tiny_imagenet, downsampled, imagenet); importing this package registers
them all. Decoding is the slow part (60,000 JPEGs take about 10 s), so file-based loaders
cache their decoded tensors (cache.py), keyed by the source files' paths, sizes and mtimes:
a changed file is decoded again, an unchanged one never.
"""

from benchmarks.data import (  # noqa: F401  (each registers its data sets)
    cifar,
    cinic,
    digits,
    downsampled,
    idx,
    imagefolder,
    imagenet,
    svhn,
    tiny_imagenet,
)
from benchmarks.data.dataset import DataSet, channel_stats, fingerprint
from benchmarks.data.loading import DATASETS, Loader, Source, dataset_names, load_dataset
from benchmarks.data.splits import stratified_split

__all__ = [
    "DATASETS",
    "DataSet",
    "Loader",
    "Source",
    "channel_stats",
    "dataset_names",
    "fingerprint",
    "load_dataset",
    "stratified_split",
]
