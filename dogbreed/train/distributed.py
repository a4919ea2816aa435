"""Data-parallel training under torchrun: process group, sharding, and the collectives we use.

`torchrun --nproc_per_node=N train.py ...` (and multi-node `--nnodes=2 --rdzv-backend=c10d
--rdzv-endpoint=HOST:PORT`) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`init` turns them into a gloo (CPU) or nccl (CUDA) process group. Without them every helper
here is a no-op for a single process, so the trainer has one code path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = Context()


def launched_by_torchrun(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    return int(environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> Context:
    """Joins the process group torchrun described; a single process otherwise."""
    if not launched_by_torchrun():
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    context = Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    log.info("rank %d of %d (%s)", context.rank, context.world_size, dist.get_backend())
    return context


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (float64 on the CPU; counts stay exact below 2**53)."""
    tensor = torch.as_tensor(values, dtype=torch.float64).clone()
    if not dist.is_initialized():
        return tensor
    moved = tensor.to(_collective_device())
    dist.all_reduce(moved)
    return moved.cpu()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: a decision all ranks must take together."""
    return bool(all_reduce_sum([1.0 if flag else 0.0])[0] > 0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value, on every rank."""
    if not dist.is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ...: every sample exactly once across ranks, no padding.

    DistributedSampler pads the last round with repeated samples, which would make the
    summed evaluation metrics differ from a single-process evaluation.
    """

    def __init__(self, length: int, context: Context) -> None:
        self.indices = list(range(context.rank, length, context.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def check_identical_weights(digest: str, world_size: int) -> None:
    """DDP keeps replicas in step; a mismatch would mean silently wrong results, so fail loudly.

    Args:
        digest: this rank's digest of its weights.
        world_size: the number of ranks, for the messages.
    """
    digests = gather_objects(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"the {world_size} ranks ended with different weights: {digests}")
    log.info("weights identical on all %d ranks (sha256 %s...)", world_size, digests[0][:12])
