"""Data-parallel training under torchrun: one process per device, PyTorch's own tools.

    torchrun --nproc_per_node=2 -m tmkd_core student --profile cpu --method TMKD --seed 0
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 \\
             --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 -m tmkd_core student ...

`init()` joins the process group that torchrun describes in the environment (gloo on CPU,
nccl on CUDA); without torchrun there is no group and everything runs in one process.
Under a group:

- each global batch of `batch_size` images, taken from the seeded order one process
  would use, is split into `world` equal shards and rank r trains on the r-th; Distributed-
  DataParallel averages the gradients, so for a loss that is a mean over samples every
  step follows the gradient of the global batch's loss. BatchNorm statistics are per
  shard, or global with `sync_batchnorm=True` (SyncBatchNorm, CUDA only);
- a stage (a teacher, a student run) is trained by all ranks together and written by rank 0
  alone, under its file lock (`build_once`); checkpoints are written by rank 0 and a
  resumed run reads the same file on every rank; the teacher-output cache is built once
  (by the first rank to take its lock) and read by all;
- per-epoch metrics are summed over ranks before they are recorded.

Every rank reads what rank 0 wrote: on several machines, `data/` must be on a file system
they share (with working `flock`), and the machines must run the same software (the keys
hold torch's version and thread count). The world size enters every key: with per-shard
BatchNorm, and with the in-batch negatives of the vision-language term (`student.vlc`
teacher_text / both), a shard's loss is not the global batch's. A torchrun job therefore
trains its own teachers rather than reading a one-process run's.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


_GROUP: Group | None = None


def init() -> Group | None:
    """Join torchrun's process group (once per process); None when not launched by torchrun."""
    global _GROUP
    if _GROUP is not None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _GROUP
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    # gloo for CPU tensors (metrics, and CPU training), nccl for CUDA ones
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    _GROUP = Group(dist.get_rank(), dist.get_world_size(), local_rank)
    return _GROUP


def current() -> Group | None:
    return _GROUP


def is_main() -> bool:
    """True in a single process and on rank 0: the one that writes files and prints results."""
    return _GROUP is None or _GROUP.main


def barrier() -> None:
    if _GROUP is not None:
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's value on every rank."""
    if _GROUP is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (float64, so counts stay exact)."""
    if _GROUP is None:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard_order(order: torch.Tensor, batch_size: int, group: Group | None) -> tuple[torch.Tensor, int]:
    """This rank's part of an epoch's order and its per-rank batch size: global batch i is
    order[i*B:(i+1)*B], of which rank r takes the r-th of `world` equal slices."""
    if group is None:
        return order, batch_size
    if batch_size % group.world:
        raise ValueError(f"batch_size={batch_size} does not split over {group.world} processes; use a multiple "
                         f"of {group.world} (it is the global batch)")
    per_rank, steps = batch_size // group.world, len(order) // batch_size
    return order[:steps * batch_size].view(steps, group.world, per_rank)[:, group.rank].flatten(), per_rank


LOCK_POLL_S = 5.0


def _poll(try_once: Callable[[], bool]) -> None:
    """Until rank 0's `try_once()` succeeds, every rank sleeps and asks again, in step: a
    lock held for hours by another job never leaves a collective waiting into its timeout."""
    while not broadcast(try_once()):
        time.sleep(LOCK_POLL_S)


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """The file lock of `path` (`utils.file_lock`), held by rank 0 for the whole group."""
    from .utils import file_lock

    if _GROUP is None:
        with file_lock(path):
            yield
    elif _GROUP.main:
        with file_lock(path, acquire=_poll):
            yield
    else:
        _poll(lambda: False)  # rank 0's answer is the one broadcast
        yield


def build_once(path: str | Path, build: Callable[[], None], load: Callable[[Path], Any]) -> Any:
    """`utils.build_once` for a stage all ranks train together: rank 0 takes the file lock
    and decides whether to build; every rank runs `build` (whose collectives need them all;
    only rank 0 writes); then every rank loads. Needs a file system all ranks share."""
    from .utils import build_once as build_once_locally

    path = Path(path)
    if _GROUP is None:
        return build_once_locally(path, build, load)
    if not broadcast(path.exists()):
        with locked(path):
            if not broadcast(path.exists()):  # another job may have built it while rank 0 waited
                build()
            barrier()
    return load(path)


class LossModule(torch.nn.Module):
    """`loss_fn(batch)` as a module's forward, so that DistributedDataParallel sees the
    forward of the training step (and sets up its gradient averaging) whatever computes it."""

    def __init__(self, module: torch.nn.Module, loss_fn: Callable):
        super().__init__()
        self.module, self.loss_fn = module, loss_fn

    def forward(self, batch):
        return self.loss_fn(batch)


def data_parallel(module: torch.nn.Module, loss_fn: Callable, device: torch.device, sync_batchnorm: bool = False):
    """The training step's loss under DistributedDataParallel (with SyncBatchNorm if asked)."""
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a loss term switched off leaves its head without a gradient
    return DistributedDataParallel(LossModule(module, loss_fn), device_ids=device_ids, find_unused_parameters=True)
