"""Argument checks shared by the public op functions (ValueError naming the argument)."""

import torch

ACTIVATION_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Recurrence precision for activations of ``dtype``: fp64 for fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def expect(cond: bool, name: str, expected, got) -> None:
    """Raises ValueError naming ``name`` unless ``cond``. ``expected`` is a string, or a function
    returning one when it mentions sizes: formatting a symbolic size under torch.compile would
    specialize it (a recompile for every sequence length), so it is formatted only on failure."""
    if not cond:
        raise ValueError(f"{name}: expected {expected() if callable(expected) else expected}, "
                         f"got {got}")


def check_tensor(t, name: str, like: torch.Tensor, like_name: str) -> None:
    """``t`` is a tensor on the device of ``like`` (the op's leading argument)."""
    expect(isinstance(t, torch.Tensor), name, "a torch.Tensor", type(t).__name__)
    expect(t.device == like.device, name, f"a tensor on {like.device} ({like_name}'s device)", t.device)


def prepare_cu_seqlens(cu_seqlens, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Checks rank, dtype, device and batch size 1 of ``like``; returns contiguous int32.

    The contents (starts at 0, non-decreasing, ends at T) are checked inside the kernels, which
    needs no host sync.
    """
    check_tensor(cu_seqlens, "cu_seqlens", like, like_name)
    expect(cu_seqlens.dim() == 1 and cu_seqlens.shape[0] >= 2, "cu_seqlens",
           "a 1-D tensor of N + 1 >= 2 offsets", tuple(cu_seqlens.shape))
    expect(cu_seqlens.dtype in (torch.int32, torch.int64), "cu_seqlens", "dtype int32 (or int64)",
           cu_seqlens.dtype)
    expect(like.shape[0] == 1, like_name, "batch size 1 when cu_seqlens packs the sequences",
           like.shape[0])
    return cu_seqlens.to(torch.int32).contiguous()
