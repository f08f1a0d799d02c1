"""Exact GraNd keeps nothing of a chunk's graph once the chunk is scored, so that scoring
many chunks runs at the memory of one (a regression: each chunk's graph, its saved
activations, once stayed alive for good through a cycle between the hooks and the pass)."""

import gc
import os
import weakref
from pathlib import Path

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from benchmarks.models import build_model
from methods.core.grad_norms import per_example_grad_norms

STATM = Path("/proc/self/statm")


def resident_bytes() -> int:
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def model_and_data(name: str, size: int, n: int):
    torch.manual_seed(0)
    model = build_model(name, 3, 10, (size, size), (0.5,) * 3, (0.25,) * 3)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return model, x, torch.randint(0, 10, (n,), generator=g)


class SavedTensors:
    """Weak references to every tensor the autograd graphs save while active, the
    model's own parameters and buffers aside, and the bytes of their distinct storages:
    what a leaked graph would keep alive."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.refs: list[weakref.ref] = []
        self.storages: dict[int, int] = {}
        self.hooks = saved_tensors_hooks(self.pack, lambda t: t)
        owned = [*model.parameters(), *model.buffers()]
        self.owned = {t.untyped_storage().data_ptr() for t in owned}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() in self.owned:
            return t
        # a detached alias: the tensor itself would hold its own node when the node
        # saves its output, a cycle of the test's making
        alias = t.detach()
        self.refs.append(weakref.ref(alias))
        self.storages[storage.data_ptr()] = storage.nbytes()
        return alias

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.refs)


@pytest.mark.parametrize(("name", "size"), [("cnn", 32), ("resnet18", 16)])
def test_no_saved_activation_outlives_its_chunk(name, size):
    model, x, y = model_and_data(name, size, n=12)
    saved = SavedTensors(model)
    with saved.hooks:
        per_example_grad_norms(model, x, y, chunk_size=4)
    gc.collect()
    assert saved.refs and saved.alive() == 0


@pytest.mark.skipif(not STATM.exists(), reason="resident memory is read from /proc/self/statm")
@pytest.mark.parametrize(
    ("name", "size", "chunks"),
    [("cnn", 32, 24), pytest.param("resnet18", 16, 16, marks=pytest.mark.slow)],
)
def test_resident_memory_stays_at_one_chunks_graph_over_many_chunks(name, size, chunks):
    chunk = 8
    model, x, y = model_and_data(name, size, n=chunk * chunks)
    saved = SavedTensors(model)
    with saved.hooks:  # one chunk's graph: the most a pass may hold at a time
        per_example_grad_norms(model, x[:chunk], y[:chunk], chunk_size=chunk)
    one_graph = sum(saved.storages.values())
    gc.collect()
    before = resident_bytes()
    per_example_grad_norms(model, x, y, chunk_size=chunk)
    gc.collect()
    growth = resident_bytes() - before
    # a leak keeps every chunk's graph, `chunks` times one graph; the allocator's own
    # slack is well under a quarter of that
    assert growth < chunks * one_graph / 4
