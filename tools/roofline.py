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
design  what each kernel of the CUDA chunk scan (csrc/cuda/chunk_delta_scan.cuh) loads and stores
        in global memory per (chunk, head), chunk_kernel_bytes: the scan's own bytes plus the
        workspace between its kernels (W, u_loc, one D × D state map per chunk and direction, read
        again by the state chain) and the re-reads (every chunk kernel loads q and/or k; with
        in-kernel normalisation, chunk_bwd re-reads the raw rows and its own dq, dk). Its sum is
        the memory floor of this design, which no tuning of these kernels can go under.
"""

BF16, FP32 = 2, 4


def scan_floor_bytes(tokens: int, H: int, D: int, P: int) -> int:
    """Bytes that a chunk_delta_scan fwd+bwd over tokens × H heads must move (docstring above)."""
    forward = BF16 * (2 * D + 2 * P + 1 + 2 * P) + FP32 * 2 * P
    backward = BF16 * (2 * D + 2 * P + 1 + 2 * P) + FP32 * 2 * P + BF16 * (2 * D + 2 * P + 1) + FP32 * 2 * P
    return tokens * H * (forward + backward)


def _granules(nbytes: int) -> int:
    """nbytes rounded up to whole 16-byte granules (the kernels' Carve allocations)."""
    return (nbytes + 15) // 16 * 16


def map_record_bytes(D: int, P: int) -> int:
    """A chunk's state map record (MapRecord): M (D × D), c (P × D complex), Γ_{n−1} (P complex),
    fp32, each part whole granules."""
    return _granules(FP32 * D * D) + _granules(2 * FP32 * P * D) + _granules(2 * FP32 * P)


def chunk_kernel_bytes(C: int, D: int, P: int, l2_rows: bool) -> dict:
    """Global-memory bytes per (chunk, head) of each CUDA chunk-scan kernel, by the name stem of
    its kernel (`<stem>_kernel`), for bf16 inputs and gradients and fp32 decay, states and
    workspace; state_chain and segment_maps run once per direction (segment_maps only for few
    long chains; its composite map, written once per segment, is not counted)."""
    rows, decay, state, rec = BF16 * C * D, FP32 * 2 * C * P, FP32 * 2 * P * D, map_record_bytes(D, P)
    v = BF16 * 2 * C * P  # v, o, dy, dv: C × P complex bf16
    return {
        # k, decay, β, v in; W (C × D fp32), u_loc (C × P complex fp32), the map record out
        "chunk_prepare": rows + decay + BF16 * C + v + FP32 * C * D + 2 * FP32 * C * P + rec,
        # the map record in, the state at the chunk's start out
        "state_chain": rec + state,
        "segment_maps": rec,
        # q, k, decay, s0, W, u_loc in; o out
        "chunk_output": 2 * rows + decay + state + FP32 * C * D + 2 * FP32 * C * P + v,
        # k, q, decay, β, dy in; the backward map record (Mᵀ, ds_loc, Γ_{n−1}) out
        "bwd_local": 2 * rows + decay + BF16 * C + v + rec,
        # k, q, decay, β, dy, s0, ds, v in; dq, dk, dv, dβ, d log_decay and d phase out; with
        # in-kernel normalisation the raw rows and dq, dk read again and dq, dk rewritten
        "chunk_bwd": 4 * rows + 2 * decay + 2 * BF16 * C + 3 * v + 2 * state + (6 * rows if l2_rows else 0),
    }


def kernel_floors(kernels, per_chunk: dict, chunk_heads: int, bandwidth_gbs: float) -> list:
    """[(name, ms, launches, floor ms or None)] of profiled kernels [(name, ms, launches)]: a
    kernel named `...<stem>_kernel<...` of per_chunk (chunk_kernel_bytes) moves its bytes per
    (chunk, head) for chunk_heads of them in each launch, at bandwidth_gbs."""
    def floor(name, launches):
        stem = next((k for k in per_chunk if f"{k}_kernel" in name), None)
        if stem is None:
            return None
        return roofline_ms(nbytes=per_chunk[stem] * chunk_heads * launches, bandwidth_gbs=bandwidth_gbs)
    return [(name, ms, launches, floor(name, launches)) for name, ms, launches in kernels]


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
