"""Process-group set-up from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, ...).

A plain ``python -m ...`` run is a world of one and never touches ``torch.distributed``; under
``torchrun`` the backend is nccl on CUDA and gloo on CPU. Rank 0 alone logs and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from components.common.errors import DalError


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is this rank's GPU when CUDA is available, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise DalError("device: cuda was requested but CUDA is not available (use auto or cpu)")
        return torch.device("cuda", local_rank)
    if requested == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")


@contextlib.contextmanager
def distributed(device: str = "auto", timeout_s: int = 1800) -> Iterator[DistEnv]:
    """Join the torchrun process group for the duration of the block (no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    env = DistEnv(rank, world_size, local_rank, pick_device(device, local_rank))
    if world_size == 1:
        yield env
        return
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    backend = "nccl" if env.device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        timeout=dt.timedelta(seconds=timeout_s),
        device_id=env.device if backend == "nccl" else None,
    )
    try:
        yield env
    finally:
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.is_distributed:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate equal-shaped tensors from every rank along dim 0, in rank order (no grad)."""
    if not env.is_distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(env.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def broadcast_object(obj: object, env: DistEnv) -> object:
    """Rank 0's value of a picklable object on every rank."""
    if not env.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
