"""data.storage: whether a data set's decoded tensors live on the device or are streamed.

`auto` keeps in memory what fits the device with room for training (half of its memory, the
other half for the model, activations and optimizer) and streams the rest; the choice and
its reason are printed and recorded. Only data sets with a packed-store reader stream
(benchmarks.data.stream.STREAMABLE); every other one fits in memory at its own size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from benchmarks.errors import ConfigError

STORAGES = ("auto", "memory", "stream")
ROOM_FOR_TRAINING = 0.5


def choose_storage(cfg: Mapping[str, Any], device: torch.device) -> tuple[str, str]:
    """("memory" or "stream", why), for the data config `cfg` on `device`."""
    from benchmarks.data.stream import STREAMABLE, StreamOptions

    storage = str(cfg.get("storage") or "auto")
    if storage not in STORAGES:
        raise ConfigError(
            f"data.storage={storage!r} is not allowed; use auto (in memory where the decoded "
            "data fits the device with room for training, else streamed), memory or stream"
        )
    name = str(cfg.get("name"))
    options = StreamOptions.from_config(cfg.get("stream"))
    if storage == "memory":
        if options.transform == "crop":
            raise ConfigError(
                "data.stream.transform=crop crops the source images at every step: it needs "
                "data.storage=stream (or data.stream.transform=fixed)"
            )
        return "memory", "data.storage=memory"
    if storage == "stream":
        return "stream", "data.storage=stream"
    if name not in STREAMABLE:
        return "memory", f"{name} has no streamed reader; it is decoded into memory"
    if options.transform == "crop":
        return "stream", "data.stream.transform=crop reads the source images at every step"
    needed = _decoded_bytes(cfg)
    budget = _device_bytes(device)
    verdict = "fits" if needed <= ROOM_FOR_TRAINING * budget else "does not fit"
    reason = (
        f"decoded {needed / 2**30:.1f} GiB {verdict} in half of the {device.type} memory "
        f"({budget / 2**30:.1f} GiB)"
    )
    return ("memory" if verdict == "fits" else "stream"), reason


def _decoded_bytes(cfg: Mapping[str, Any]) -> int:
    """uint8 bytes of the decoded train and test images (files counted, none decoded)."""
    from benchmarks.data.imagenet import imagenet_files, imagenet_folders
    from benchmarks.data.loading import Source

    source = Source.from_config(cfg)
    resolution, class_dirs = imagenet_folders(source)
    _, splits = imagenet_files(source.name, class_dirs)
    n = sum(len(files) for files, _ in splits.values())
    return n * 3 * resolution * resolution


def _device_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
