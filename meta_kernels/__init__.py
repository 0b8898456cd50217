"""torch.library fake kernels for every cdssm op (shapes and dtypes only, no compute).

The op library names this module (``m.set_python_module("cdssm.meta_kernels")`` in csrc/ops.cpp),
so every registration happens here, from the functions of the per-family modules.
"""

import torch

from . import causal_conv1d, delta_scan

_FAKES = {
    "cdssm::chunk_delta_scan_fwd": delta_scan.chunk_delta_scan_fwd,
    "cdssm::chunk_delta_scan_bwd": delta_scan.chunk_delta_scan_bwd,
    "cdssm::recurrent_delta_scan_fwd": delta_scan.recurrent_delta_scan_fwd,
    "cdssm::recurrent_delta_scan_bwd": delta_scan.recurrent_delta_scan_bwd,
    "cdssm::causal_conv1d_silu_fwd": causal_conv1d.causal_conv1d_silu_fwd,
    "cdssm::causal_conv1d_silu_bwd": causal_conv1d.causal_conv1d_silu_bwd,
}

for _name, _fn in _FAKES.items():
    torch.library.register_fake(_name)(_fn)
