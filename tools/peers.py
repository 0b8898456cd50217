"""flash-linear-attention (fla 0.6.0) peers of the GPU benchmarks' rows (imported as a sibling
module by bench_scan_gpu.py and bench_gpu.py for --peers). fla is imported only inside these
functions: without it the benchmarks run as before and --peers is a clear argparse error.

scan   fla.ops.gated_delta_rule.chunk_gated_delta_rule (Gated DeltaNet's chunked Triton scan) at
       bench_scan_gpu.py's shape: q, k (B, T, H, K), v (B, T, H, V) bf16, layout (B, T, H, ·)
       like ours (fla 0.6.0 has no head-first layout), K = V = D, states (B, H, V, K) fp32.
       At phase 0 and one log-decay for all P pairs, our chunk_delta_scan is this recurrence
       with V = 2P: S_t = γ_t S_{t−1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t (scale 1);
       its test checks this against fla's reference.
block  GatedDeltaNetBlock: TransformerBlock with fla's GatedDeltaNet layer for attention.
"""

import importlib

import torch
from torch import nn

from cuda_timing import forward_and_step

from cdssm.models.layers import RMSNorm
from cdssm.models.transformer import SwiGLU, TransformerConfig

FLA_FIX = ("run tools/fetch_peer_wheels.sh here (it fills .whl/), carry .whl to the GPU machine "
           "and run `python3 -m pip install --no-deps --no-index .whl/*.whl` there")

# The Gated DeltaNet layer's head layout, sized so that the block matches CDSSMBlock's parameters
# (7.49 M against 7.46 M at d = 768): q, k heads of head_dim 64 like ours, values of
# head_dim · expand_v = 128 (fla's default expand_v), 7 heads. fla's own defaults (6 heads of 256)
# are sized for d = 2048: at d = 768 they make a block of 14.2 M parameters, 1.9× ours.
GDN_HEADS, GDN_HEAD_DIM, GDN_EXPAND_V = 7, 64, 2.0


def fla_missing(module: str):
    """None when fla's ``module`` imports, else why not (the ImportError's text)."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        return str(error)
    return None


def require_fla(parser, module: str) -> None:
    """parser.error naming --peers and the fix unless fla's ``module`` imports."""
    why = fla_missing(module)
    if why is not None:
        parser.error(f"--peers: needs flash-linear-attention 0.6.0 (fla) to import {module} "
                     f"({why}): {FLA_FIX}")


def lift_triton_guard() -> str | None:
    """fla 0.6.0 refuses its gated backward kernel (chunk_bwd_dqkwg, in chunk_gated_delta_rule's
    backward) on Hopper with Triton in [3.4, 3.7.1), where Triton miscompiles a transpose of an
    mma result and dk, hence dβ and dg, come out wrong (fla issues #640, #983). The GPU machine has
    Triton 3.6. The kernel's instructions are the same, so for timing alone this lifts the guard
    and returns a note that says so for the rows; None where the guard does not apply."""
    chunk_o = importlib.import_module("fla.ops.common.chunk_o")
    if not (chunk_o.IS_NVIDIA_HOPPER and chunk_o.TRITON_ABOVE_3_4_0 and not chunk_o.TRITON_ABOVE_3_7_1):
        return None
    chunk_o.TRITON_ABOVE_3_7_1 = True
    return ("timing only: fla's guard against Triton < 3.7.1 on Hopper lifted (its gated "
            "backward's dk, dβ, dg are wrong there: fla #640); same kernels, same work")


def fla_version() -> str:
    import fla

    return fla.__version__


def fla_scan_inputs(B, T, H, K, V, dtype, l2_rows):
    """chunk_gated_delta_rule's tensors by argument name, all requiring grad: q, k (B, T, H, K)
    in dtype, unit rows (raw N(0, 1) rows with l2_rows, normalised inside by
    ``use_qk_l2norm_in_kernel``; contiguous, since fla copies strided inputs before its
    kernels); v (B, T, H, V) dtype; g (B, T, H) fp32 log-decay in [−0.1, 0] (our log_decay's
    range); beta (B, T, H) dtype in (0, 1); initial_state (B, H, V, K) fp32 (``state_v_first``,
    the layout of our (2P, D) states and the one fla's GatedDeltaNet layer uses)."""
    gen = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device="cuda")

    q, k = randn(B, T, H, K), randn(B, T, H, K)
    if not l2_rows:
        q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    tensors = dict(q=q.to(dtype), k=k.to(dtype), v=randn(B, T, H, V).to(dtype), g=-0.1 * rand(B, T, H),
                   beta=rand(B, T, H).to(dtype), initial_state=randn(B, H, V, K))
    return {name: t.requires_grad_() for name, t in tensors.items()}


def fla_scan_options(l2_rows):
    """chunk_gated_delta_rule's keyword arguments matching scan_options: the final state out,
    states (V, K) per head, scale 1 (ours reads q·k unscaled; fla's default is K^−½), q and k
    normalised inside with l2_rows, beta and g given as they are (no in-kernel sigmoid or
    gate)."""
    return dict(scale=1.0, output_final_state=True, state_v_first=True,
                use_qk_l2norm_in_kernel=l2_rows)


def fla_scan_steps(B, T, H, K, V, dtype, l2_rows):
    """(fwd, step) of chunk_gated_delta_rule on fla_scan_inputs, as bench_scan_gpu's scan_steps:
    fwd under no_grad; step backpropagates an N(0, 1) cotangent of o (B, T, H, V) and ones of
    the final state into every input, the initial state included."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    inputs = fla_scan_inputs(B, T, H, K, V, dtype, l2_rows)
    options = fla_scan_options(l2_rows)
    grad_o = torch.randn(B, T, H, V, device="cuda").to(dtype)
    return forward_and_step(lambda: chunk_gated_delta_rule(**inputs, **options), grad_o)


class GatedDeltaNetBlock(nn.Module):
    """x + GDN(RMSNorm(x)), then + SwiGLU(RMSNorm(x)): TransformerBlock with fla's GatedDeltaNet
    layer in place of attention; norms, SwiGLU (hidden 8d/3 rounded up to 64) and eps from
    TransformerConfig. x (B, L, d) → (B, L, d).

    The layer's head layout is GDN_HEADS, GDN_HEAD_DIM, GDN_EXPAND_V (q, k 7 × 64, v 7 × 128),
    with fla's other defaults: output gate, short convolutions of width 4 on q, k, v, fla's
    Triton short convolution (ShortConvolution's default backend, so the causal-conv1d package
    is not needed). Parameters: layer 2·d·448 (q, k) + 2·d·896 (v, output gate) + 896·d (out)
    + 2·d·7 (decay, beta) + 4·(2·448 + 896) (convolutions) + 14 + 128 = 2,770,574 at d = 768;
    block 7,490,702 (CDSSMBlock 7,464,984, TransformerBlock 7,079,424).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        from fla.layers import GatedDeltaNet

        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.attn = GatedDeltaNet(hidden_size=config.d_model, num_heads=GDN_HEADS,
                                  head_dim=GDN_HEAD_DIM, expand_v=GDN_EXPAND_V)
        self.mlp_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.mlp = SwiGLU(config.d_model, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))[0]
        return x + self.mlp(self.mlp_norm(x))


def compiled_or_eager(make_step):
    """(step, how): make_step(True)'s step when its first call runs, else make_step(False)'s;
    how is "compiled" or "eager (why the compiled one failed)". make_step(compiled) builds a
    step (e.g. bench_gpu.block_step); torch.compile may reject fla's custom autograd Functions
    and Triton kernels in its trace or in the backward, so the probe is a whole step.
    Out of memory is raised, not taken for a compile failure."""
    try:
        step = make_step(True)
        step()
        return step, "compiled"
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # Dynamo, AOTAutograd or Inductor: each has its own errors
        torch._dynamo.reset()
        torch.cuda.empty_cache()
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return make_step(False), f"eager ({type(error).__name__}: {first[:160]})"
