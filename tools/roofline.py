"""Rooflines of the GPU benchmarks' rows (imported as a sibling module): the time a step would take
if its matrix products ran at the bf16 peak and its scan moved only the bytes it must, both rates
measured in the same run (cuda_timing.matmul_peak_tflops, cuda_timing.copy_bandwidth_gbs). A row's
fraction of its roofline is roofline time / measured time.

block   6·N·tokens FLOPs (N parameters: forward 2N, backward 4N per token) at the peak, plus for
        the Transformer 6·L·d per token of causal attention (Q Kᵀ and P V over half the L × L
        scores: 2·L·d forward, twice that backward), plus for CD-SSM the scan's memory floor.
scan    the bytes a fwd+bwd must move at least once, per token and head (element sizes of the
        benchmarks' dtypes: q, k, v, β, o and their gradients 2 bytes, log_decay, phase and
        theirs 4): forward reads q, k (2D), v (2P), β, log_decay and phase (P each) and writes
        o (2P); backward reads q, k, v, β, log_decay, phase and dy, and writes dq, dk, dv, dβ,
        d log_decay and d phase. At D 64, P 1: 818 bytes, 0.21 ms for 32k tokens × 24 heads at
        3 TB/s.
"""

BF16, FP32 = 2, 4


def scan_floor_bytes(tokens: int, H: int, D: int, P: int) -> int:
    """Bytes that a chunk_delta_scan fwd+bwd over tokens × H heads must move (docstring above)."""
    forward = BF16 * (2 * D + 2 * P + 1 + 2 * P) + FP32 * 2 * P
    backward = BF16 * (2 * D + 2 * P + 1 + 2 * P) + FP32 * 2 * P + BF16 * (2 * D + 2 * P + 1) + FP32 * 2 * P
    return tokens * H * (forward + backward)


def model_flops(arch: str, n_params: int, L: int, d: int, tokens: int, layers: int = 1) -> int:
    """Model FLOPs of a fwd+bwd over tokens (B sequences of L) of a model of n_params parameters
    with `layers` blocks: 6·N·tokens, plus 6·L·d·tokens of causal attention per block for arch
    "transformer"."""
    return 6 * n_params * tokens + (layers * 6 * L * d * tokens if arch == "transformer" else 0)


def roofline_ms(*, flops: float = 0, peak_tflops: float = 0, nbytes: float = 0,
                bandwidth_gbs: float = 0) -> float:
    """flops at peak_tflops (TFLOP/s) plus nbytes at bandwidth_gbs (GB/s), ms; a rate is needed
    only for a nonzero amount."""
    for amount, rate, name in ((flops, peak_tflops, "peak_tflops"), (nbytes, bandwidth_gbs, "bandwidth_gbs")):
        if amount and rate <= 0:
            raise ValueError(f"{name}: must be > 0 to time {amount:g}, got {rate}")
    return (flops / (peak_tflops * 1e9) if flops else 0.0) + (nbytes / (bandwidth_gbs * 1e6) if nbytes else 0.0)
