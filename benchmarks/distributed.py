"""One cell over many processes: torch.distributed, set up from torchrun's or submitit's tasks.

The launcher starts the processes (torchrun on one machine, submitit's tasks on SLURM or
locally); nothing here spawns any. `read_launch` reads the world from the environment
without forming a group, so that pre-flight checks (the global batch must divide over
the ranks) answer before any rendezvous; `setup` then forms the group (NCCL on GPUs,
gloo on CPU) with a timeout on every collective, so that a rank that dies ends the job
instead of hanging it. A world of one is a no-op: `Dist()` is what a one-device run
holds, and every method below then does nothing or returns its input.

The protocol is the global batch: the plan names the examples of each global batch,
every rank takes a contiguous slice of it (`shard`), and per-example results are
gathered back into the global order (`gather_rows`). Rank 0 is the one writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as td
from torch import nn

from benchmarks.errors import ConfigError, RankStopped
from benchmarks.sync_batchnorm import convert_to_cpu_sync

log = logging.getLogger(__name__)

T = TypeVar("T")
# cells this process has run data-parallel: all ranks run the same cells in the same order
_cells = 0
# how often a rank waiting for the writer looks at the store (the writer may score for hours)
POLL_S = 0.5


@dataclass(frozen=True)
class Launch:
    """Where this process stands in the job, as its launcher told it through the environment."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    nodes: int = 1
    launcher: str = "none"  # torchrun | submitit | none
    master_addr: str = ""
    master_port: int = 0
    agent_store: bool = False  # torchrun's agent hosts the rendezvous store


def read_launch() -> Launch:
    """The world this process belongs to: torchrun's variables, else submitit's tasks, else one.

    submitit's `TorchDistributedEnvironment` gives the rendezvous of a job's tasks (first
    node, a port drawn from the job id); its CUDA_VISIBLE_DEVICES rewrite is not used
    (submitit#1704: a task that SLURM already bound to one GPU sees it as cuda:0, and
    rewriting the variable to the local rank hides it), see `rank_device`.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return Launch(
            rank=int(env["RANK"]),
            world=world,
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            local_world=int(env.get("LOCAL_WORLD_SIZE", world)),
            nodes=max(1, world // int(env.get("LOCAL_WORLD_SIZE", world))),
            launcher="torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
        )
    if env.get("SUBMITIT_EXECUTOR"):
        from submitit.helpers import TorchDistributedEnvironment

        task = TorchDistributedEnvironment()
        if task.world_size > 1:
            return Launch(
                rank=task.rank,
                world=task.world_size,
                local_rank=task.local_rank,
                local_world=task.local_world_size,
                nodes=max(1, task.world_size // task.local_world_size),
                launcher="submitit",
                master_addr=task.master_addr,
                master_port=task.master_port,
            )
    return Launch()


def check_global_batch(batch_size: int, world: int) -> None:
    """train.batch_size is the protocol's global batch: it must split evenly over the ranks."""
    if batch_size % world:
        below = batch_size - batch_size % world
        raise ConfigError(
            f"train.batch_size={batch_size} is the global batch and must divide evenly over "
            f"the {world} ranks of this job (each rank takes batch_size / {world}); use a "
            f"multiple of {world}, e.g. {below or world} or {below + world}"
        )


def rank_device(setting: str, launch: Launch) -> torch.device:
    """This rank's device: one GPU per process, whatever the launcher made visible.

    A world of one takes `device` as given (`resolve_device`). Otherwise a task that sees
    one GPU (SLURM bound it, or CUDA_VISIBLE_DEVICES was split) takes cuda:0, and a task
    that sees all of its node's GPUs takes cuda:<local rank>. Fewer GPUs than ranks on a
    node is an error, never two ranks on one GPU.
    """
    if launch.world == 1:
        return resolve_device(setting)
    if setting == "cpu":
        return torch.device("cpu")
    if setting not in ("auto", "cuda"):
        raise ConfigError(
            f"device={setting!r} pins every one of the {launch.world} ranks to one device; "
            "use device=auto (or cuda, or cpu): each rank takes its own GPU"
        )
    if not torch.cuda.is_available():
        if setting == "cuda":
            raise ConfigError("device=cuda but CUDA is not available; use device=cpu or auto")
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if visible == 1:
        return torch.device("cuda", 0)
    if visible >= launch.local_world:
        return torch.device("cuda", launch.local_rank)
    raise ConfigError(
        f"{launch.local_world} ranks run on this node but {visible} GPUs are visible "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); give each task "
        f"its GPU: hydra.launcher.gpus_per_node={launch.local_world} (= tasks_per_node)"
    )


@dataclass
class Dist:
    """This process's place in a data-parallel cell; world 1 (the default) is a no-op."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    launch: Launch = field(default_factory=Launch)
    sync_bn: bool = False
    backend: str | None = None
    timeout_s: float = 0.0
    store: Any = None  # a PrefixStore for this job's messages between ranks
    # messages through the store so far: every rank sends them in the same order, so the
    # n-th one's keys are the same on every rank and never those of an earlier one
    _messages: int = field(default=0, init=False, repr=False)

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world(self) -> int:
        return self.launch.world

    @property
    def active(self) -> bool:
        return self.launch.world > 1

    @property
    def writer(self) -> bool:
        """Rank 0 writes records, sidecars, checkpoints, score artifacts and W&B."""
        return self.launch.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the record says about how the cell was spread."""
        return {
            "world_size": self.world,
            "nodes": self.launch.nodes,
            "ranks_per_node": self.launch.local_world,
            "launcher": self.launch.launcher,
            "backend": self.backend,
            "sync_bn": self.sync_bn,
        }

    # ---------------------------------------------------------------- slicing the batch
    def shard_bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous rows [lo, hi) of n; sizes differ by at most one."""
        return self.shard_bounds_of(self.rank, n)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (its index tensor, or any rows)."""
        if not self.active:
            return rows
        lo, hi = self.shard_bounds(rows.shape[0])
        return rows[lo:hi]

    def gather_rows(
        self, local: torch.Tensor, n: int, block_rows: int | None = None
    ) -> torch.Tensor:
        """The ranks' `shard`s of n rows put back together, in the global order, on every rank.

        The rows travel on this rank's device (NCCL's) in blocks of `block_rows` (None: all
        at once) and land on `local`'s device, so that a large result kept on the host
        (features of a whole data set) never needs room on the GPU.
        """
        if not self.active or n == 0:
            return local
        size = -(-n // self.world)
        step = block_rows or max(1, size)
        pieces: list[list[torch.Tensor]] = [[] for _ in range(self.world)]
        for start in range(0, size, step):
            block = local[start : start + step].to(self.device)
            padded = block.new_zeros((min(step, size - start), *local.shape[1:]))
            padded[: block.shape[0]] = block
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            td.all_gather(parts, padded.contiguous())
            for rank, part in enumerate(parts):
                pieces[rank].append(part.to(local.device))
        rows = []
        for rank in range(self.world):
            lo, hi = self.shard_bounds_of(rank, n)
            rows.append(torch.cat(pieces[rank])[: hi - lo])
        return torch.cat(rows)

    def shard_bounds_of(self, rank: int, n: int) -> tuple[int, int]:
        """Rank `rank`'s contiguous rows [lo, hi) of n."""
        return n * rank // self.world, n * (rank + 1) // self.world

    # ---------------------------------------------------------------- collectives
    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place."""
        if self.active:
            td.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on some rank (a preemption signal)."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        td.all_reduce(value, op=td.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def gathered(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        found: list[Any] = [None] * self.world
        td.all_gather_object(found, obj)
        return found

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """Rank `src`'s `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.rank == src else None]
        td.broadcast_object_list(box, src=src, device=self.device)
        return box[0]

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank.

        Without SyncBatchNorm each rank updates its running statistics from its own slice
        of the batch; DDP broadcasts rank 0's before each forward, so rank 0's are the
        model's. Evaluation and checkpoints read them.
        """
        if self.active:
            for buffer in model.buffers():
                td.broadcast(buffer, src=0)

    def ddp(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: `model` itself on one rank, else its DDP wrapper.

        With `sync_bn`, BatchNorm layers are first swapped in place for SyncBatchNorm
        (statistics of the global batch, as on one device; on CPU ranks CpuSyncBatchNorm,
        torch's being GPU-only); the parameters stay the same tensors, so `model` keeps
        serving evaluation and checkpoints.
        """
        if not self.active:
            return model
        if self.sync_bn:
            for name, child in list(model.named_children()):
                if self.device.type == "cuda":
                    child = nn.SyncBatchNorm.convert_sync_batchnorm(child)
                else:
                    child = convert_to_cpu_sync(child)
                setattr(model, name, child)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    # ---------------------------------------------------------------- the one writer
    def from_writer(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` run on rank 0 only, its result handed to every rank (see `from_rank`)."""
        return self.from_rank(0, key, compute)

    def from_rank(self, src: int, key: str, compute: Callable[[], T]) -> T:
        """`compute()` run on rank `src` only, its result handed to every rank.

        Every rank waits on the store until all have arrived (`src` once it computed), not
        in a collective, so that a long computation (a selection, a proxy training) does
        not run into the collective timeout, whichever rank is late; a rank that fails
        (its message in the store) or dies stops them.
        """
        if not self.active:
            return compute()
        key = self._message_key(key)
        result = compute() if self.rank == src else None
        self.store.set(f"{key}/{self.rank}", "1")
        self._wait_for([f"{key}/{rank}" for rank in range(self.world)])
        return self.broadcast_object(result, src)

    def exchange(self, key: str, mine: dict[int, T]) -> dict[int, T]:
        """Every rank's `mine` (results by an index that ranks do not share) merged, on every
        rank, through the store: a rank that finished its share early waits there, never in
        a collective, however long the others' share takes."""
        if not self.active:
            return dict(mine)
        key = self._message_key(key)
        self.store.set(f"{key}/{self.rank}", pickle.dumps(mine))
        parts = [f"{key}/{rank}" for rank in range(self.world)]
        self._wait_for(parts)
        merged: dict[int, T] = {}
        for part in parts:
            merged.update(pickle.loads(self.store.get(part)))
        if self.store.add(f"{key}/read", 1) == self.world:  # the last reader frees the store
            for part in parts:
                self.store.delete_key(part)
        return merged

    def _message_key(self, key: str) -> str:
        self._messages += 1
        return f"{key}#{self._messages}"

    def _wait_for(self, keys: list[str]) -> None:
        while True:
            try:
                if self.store.check(keys):
                    return
                failed = self.store.check(["failed"])
            except (RuntimeError, OSError) as err:
                raise RankStopped(
                    f"rank {self.rank} of {self.world} lost contact with rank 0 ({err}); "
                    "every rank stops"
                ) from err
            if failed:
                raise RankStopped(self._stopped_by(None))
            time.sleep(POLL_S)

    # ---------------------------------------------------------------- failures
    def failed(self, err: BaseException) -> RankStopped:
        """The error this rank ends with, naming the rank that failed first.

        The first rank to fail leaves its message in the store (where the others look
        when their collectives break or time out) and names itself; the others name it.
        """
        if isinstance(err, RankStopped):
            return err
        own = (
            f"rank {self.rank} of {self.world} raised {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ).rstrip(": ")
        if not _is_collective_error(err):  # a broken collective is another rank's failure
            first = own
            with contextlib.suppress(RuntimeError, OSError):
                first = self.store.compare_set("failed", "", own).decode() or own
            if first == own:
                return RankStopped(f"{own}; every rank stops", origin=True)
        return RankStopped(self._stopped_by(err))

    def _stopped_by(self, err: BaseException | None) -> str:
        """Why this rank stops: the message another rank left, else its own broken collective."""
        first = None
        deadline = time.monotonic() + 5.0  # the failing rank writes before its process ends
        while first is None and time.monotonic() < deadline:
            try:
                if self.store.check(["failed"]):
                    first = self.store.get("failed").decode()
                    break
            except (RuntimeError, OSError):
                break
            time.sleep(0.1)
        here = f"rank {self.rank} of {self.world} stopped"
        if first and not first.startswith(f"rank {self.rank} "):
            return f"{here}: {first}"
        reason = str(err).splitlines()[0] if err is not None and str(err) else "no answer"
        return (
            f"{here}: a collective failed ({reason}): another rank died or did not answer "
            f"within run.dist_timeout_s={self.timeout_s:g}"
        )

    def close(self) -> None:
        if self.active and td.is_initialized():
            td.destroy_process_group()


def _is_collective_error(err: BaseException) -> bool:
    """A collective broken by another rank (its peer closed, or the timeout), not a bug here."""
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, (RuntimeError, td.DistBackendError)) and any(
        word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer")
    )


def setup(launch: Launch, device: torch.device, timeout_s: float, sync_bn: bool) -> Dist:
    """Form this process's group on `device` (NCCL on GPUs, gloo on CPU), each cell its own
    (the store's keys are the cell's); world 1: a one-device `Dist`, no group."""
    global _cells
    if launch.world == 1:
        return Dist(device=device, sync_bn=sync_bn)
    _cells += 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_s)
    store = td.TCPStore(
        launch.master_addr,
        launch.master_port,
        world_size=None if launch.agent_store else launch.world,
        is_master=launch.rank == 0 and not launch.agent_store,
        timeout=timeout,
        wait_for_workers=False,
    )
    td.init_process_group(
        backend,
        store=td.PrefixStore(f"cell{_cells}/pg", store),
        rank=launch.rank,
        world_size=launch.world,
        timeout=timeout,
        device_id=device if device.type == "cuda" else None,
    )
    dist = Dist(
        device=device,
        launch=launch,
        sync_bn=sync_bn,
        backend=backend,
        timeout_s=timeout_s,
        store=td.PrefixStore(f"cell{_cells}/prunebench", store),
    )
    if device.type == "cuda":
        _check_one_gpu_each(dist)
    log.info(
        "rank %d of %d (%s, node-local %d of %d) on %s",
        launch.rank,
        launch.world,
        launch.launcher,
        launch.local_rank,
        launch.local_world,
        device,
    )
    return dist


def _check_one_gpu_each(dist: Dist) -> None:
    """Two ranks on one GPU (a launcher that gave every task the same GPU) is an error."""
    uuid = str(torch.cuda.get_device_properties(dist.device).uuid)
    seen: list[Any] = [None] * dist.world
    td.all_gather_object(seen, uuid)
    if len(set(seen)) < dist.world:
        raise ConfigError(
            f"the {dist.world} ranks share GPUs ({len(set(seen))} distinct): give each task "
            "its own GPU (hydra.launcher.gpus_per_node = tasks_per_node)"
        )


def resolve_device(name: str) -> torch.device:
    """The device of a one-process run: `device=auto|cpu|cuda|cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from None
