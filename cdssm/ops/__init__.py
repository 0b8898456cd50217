"""cdssm's op layer: custom ops (CPU/CUDA kernels with fake impls and autograd) and references."""

from .causal_conv1d import causal_conv1d_silu, causal_conv1d_silu_reference
from .delta_scan import chunk_delta_scan, recurrent_delta_scan
from .dynamics import ScanDecay, adaptive_timestep, cayley_transition, scan_inputs
from .reference import chunk_delta_scan_reference, recurrent_delta_scan_reference

__all__ = [
    "causal_conv1d_silu",
    "causal_conv1d_silu_reference",
    "chunk_delta_scan",
    "recurrent_delta_scan",
    "chunk_delta_scan_reference",
    "recurrent_delta_scan_reference",
    "ScanDecay",
    "adaptive_timestep",
    "cayley_transition",
    "scan_inputs",
]
