"""Numerics of a run: the device, autocast, float8 linears and activation checkpointing."""

import contextlib

import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """``auto``: cuda when available, else cpu; asking for cuda without one is a ValueError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but torch.cuda.is_available() is False "
                         "(use --device cpu)")
    return torch.device(name)


def resolve_precision(precision: str, float8: bool, device: torch.device) -> str:
    """``auto`` → bf16 on cuda, fp32 on cpu. float8 needs cuda (its scaled matmuls)."""
    if float8 and device.type != "cuda":
        raise ValueError(f"float8: needs a CUDA device, got {device.type} (drop --float8)")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """bf16 autocast (fp32 master weights stay fp32) or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def float8_eligible(module: nn.Module, tied: torch.Tensor) -> bool:
    """Whether a layer trains in float8: an nn.Linear, not the head tied to the embedding
    (``tied``, its weight), with in and out features K, N multiples of 16 (the float8 matmul's
    requirement), both >= 512, and not K <= 4096 with N <= 1024 (torchao's size rule for
    tensorwise scaling on H100: there casting costs more than the float8 matmul saves; the
    memory-bound gate and readout layers of a CD-SSM block are the small ones)."""
    if not isinstance(module, nn.Linear) or module.weight is tied:
        return False
    K, N = module.in_features, module.out_features
    return K % 16 == 0 and N % 16 == 0 and min(K, N) >= 512 and not (K <= 4096 and N <= 1024)


def convert_to_float8(model: nn.Module) -> None:
    """torchao ``convert_to_float8_training`` (dynamic tensorwise scaling) on every layer that
    ``float8_eligible`` admits. torchao is imported here only."""
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as error:
        raise ValueError("float8: needs torchao, which is not installed (pip install torchao, "
                         "or drop --float8)") from error
    tied = model.lm_head.weight
    convert_to_float8_training(model, module_filter_fn=lambda m, fqn: float8_eligible(m, tied))


def checkpoint_blocks(model: nn.Module) -> None:
    """Wraps every block of ``model.blocks`` so its activations are recomputed in the backward
    (non-reentrant ``torch.utils.checkpoint``); state-dict names are unchanged. A CD-SSM block's
    own selective recomputation is turned off: the whole block is recomputed instead."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.blocks):
        if hasattr(block, "selective_recompute"):
            block.selective_recompute = False
        model.blocks[i] = checkpoint_wrapper(block)
