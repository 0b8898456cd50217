"""Data parallelism under torchrun: the process group from the environment, FSDP2 on CUDA, DDP
on CPU, and the few collectives the trainer needs.

A run started by ``torchrun --nproc_per_node N -m cdssm train`` sees RANK, LOCAL_RANK,
WORLD_SIZE and TORCHELASTIC_RUN_ID: it joins the process group and wraps the model, even for
N = 1 (so one GPU runs the FSDP2 code path). A plain process (no WORLD_SIZE, or WORLD_SIZE = 1
outside torchrun) is not distributed: everything here is then the identity.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ParallelInfo:
    """rank, local_rank and world_size of this process; ``distributed``: whether it is in a
    process group (the model is wrapped for data parallelism); ``owns_group``: whether
    ``init_parallel`` created the group (and ``close_parallel`` destroys it)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that logs and writes files."""
        return self.rank == 0


def init_parallel(device_type: str) -> ParallelInfo:
    """Joins the process group of a torchrun launch (nccl on CUDA, gloo on CPU): when
    WORLD_SIZE > 1, or under torchrun (TORCHELASTIC_RUN_ID set) with any WORLD_SIZE."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return ParallelInfo()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return ParallelInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")),
                        dist.get_world_size(), owns, distributed=True)


def close_parallel(info: ParallelInfo) -> None:
    if info.owns_group:
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: ParallelInfo) -> torch.Tensor:
    """The mean of ``t`` over ranks (a copy; ``t`` itself when there is one rank)."""
    if info.world_size == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def gather_objects(obj, info: ParallelInfo) -> list:
    """[obj of rank 0, ..., obj of rank world_size − 1] on every rank (picklable objects)."""
    if info.world_size == 1:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_data_parallel(model: nn.Module, device: torch.device, info: ParallelInfo,
                       compile_model: bool) -> nn.Module:
    """Compiles (``fullgraph=True``, in place), shards or replicates ``model``; returns the callable.

    Not distributed: the model itself. CUDA: FSDP2 (``fully_shard``) per block and at the root,
    each block compiled first (FSDP's hooks sit between blocks, outside the graphs); fp32 parameters
    and gradient reduction (bf16 comes from autocast). CPU: DDP over gloo around the compiled
    model; the state-energy EMA buffers are synchronised by the trainer, not broadcast.
    """
    if info.distributed and device.type == "cuda":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            if compile_model:
                block.compile(fullgraph=True)
            fully_shard(block)
        fully_shard(model)
        return model
    if compile_model:
        model.compile(fullgraph=True)
    if info.distributed:
        return nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    return model


def gradient_sync(wrapped: nn.Module, enabled: bool):
    """Context for one micro-batch's backward: reduce gradients only when ``enabled`` (the last
    micro-batch of an accumulation)."""
    if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not enabled:
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()
