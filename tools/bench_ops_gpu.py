"""GPU benchmark of the decode-path ops: causal_conv1d_silu bandwidth and the recurrent decode step.

  conv     causal_conv1d_silu_fwd / _bwd at B = 1, T = --conv-tokens, E = --channels, W = 4,
           bf16, with an initial state: the median over --repeats CUDA-event timings of --inner
           back-to-back calls (so the host's dispatch overlaps the device work), per call, and the
           achieved bandwidth over the fewest bytes each must move (fwd: read x, write y;
           bwd: read x and dy, write dx), next to a device-to-device copy of the same tensor
           (the measured HBM ceiling, bytes read + written).
  decode   recurrent_delta_scan_fwd with T = 1 and a state, H = 24, D = 64, bf16, for B in
           --batches and P in --pairs: the median of one eager call (launch included) and of one
           step replayed from a CUDA graph (--steps steps captured, time / steps).
With --profile, also the per-kernel device times of one conv fwd + bwd (torch.profiler).
Prints a table and writes JSON.

Example: python tools/bench_ops_gpu.py --json runs/bench_ops_gpu.json
"""

import argparse

import torch

from cuda_timing import cuda_time_ms, kernel_times

import cdssm.ops  # noqa: F401  (loads the op library)
from cdssm.files import write_json

OPS = torch.ops.cdssm


def bench_conv(T, E, warmup, repeats, inner):
    dtype, W = torch.bfloat16, 4
    x = torch.randn(1, T, E, device="cuda", dtype=dtype)
    w = (0.5 * torch.randn(E, W, device="cuda")).to(dtype)
    b = (0.5 * torch.randn(E, device="cuda")).to(dtype)
    s0 = torch.randn(1, E, W - 1, device="cuda", dtype=dtype)
    gy = torch.randn_like(x)
    gf = torch.randn_like(s0)
    nbytes = x.numel() * x.element_size()
    copy_ms = cuda_time_ms(lambda: x.clone(), warmup, repeats, inner)
    fwd_ms = cuda_time_ms(lambda: OPS.causal_conv1d_silu_fwd(x, w, b, None, s0), warmup, repeats, inner)
    bwd_ms = cuda_time_ms(lambda: OPS.causal_conv1d_silu_bwd(gy, gf, x, w, b, None, s0), warmup, repeats,
                     inner)
    gbps = lambda n, ms: n / ms / 1e6  # noqa: E731
    return dict(B=1, T=T, E=E, W=W, dtype="bfloat16",
                copy_ms=copy_ms, copy_GBps=gbps(2 * nbytes, copy_ms),
                fwd_ms=fwd_ms, fwd_GBps=gbps(2 * nbytes, fwd_ms),
                bwd_ms=bwd_ms, bwd_GBps=gbps(3 * nbytes, bwd_ms))


def profile_conv(T, E):
    """(kernel name, device ms, count) of one causal_conv1d_silu fwd + bwd, slowest first."""
    x = torch.randn(1, T, E, device="cuda", dtype=torch.bfloat16)
    w, b = torch.randn(E, 4, device="cuda").to(x.dtype), torch.randn(E, device="cuda").to(x.dtype)
    s0 = torch.randn(1, E, 3, device="cuda", dtype=x.dtype)

    def step():
        OPS.causal_conv1d_silu_fwd(x, w, b, None, s0)
        OPS.causal_conv1d_silu_bwd(x, s0, x, w, b, None, s0)

    return kernel_times(step)


def bench_decode(B, P, H, D, steps, warmup, repeats):
    dtype = torch.bfloat16
    q = torch.nn.functional.normalize(torch.randn(B, 1, H, D, device="cuda"), dim=-1).to(dtype)
    k = torch.nn.functional.normalize(torch.randn(B, 1, H, D, device="cuda"), dim=-1).to(dtype)
    v = torch.randn(B, 1, H, P, 2, device="cuda").to(dtype)
    beta = torch.rand(B, 1, H, device="cuda").to(dtype)
    log_decay = -0.1 * torch.rand(B, 1, H, P, device="cuda")
    phase = torch.rand(B, 1, H, P, device="cuda")
    state = torch.randn(B, H, 2 * P, D, device="cuda")
    args = (q, k, v, beta, log_decay, phase, state, None)
    eager_ms = cuda_time_ms(lambda: OPS.recurrent_delta_scan_fwd(*args), warmup, repeats)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        OPS.recurrent_delta_scan_fwd(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(steps):
            OPS.recurrent_delta_scan_fwd(*args)
    graph_ms = cuda_time_ms(graph.replay, warmup, repeats) / steps
    nbytes = sum(t.numel() * t.element_size() for t in args if t is not None) + state.numel() * 4
    return dict(B=B, T=1, H=H, D=D, P=P, dtype="bfloat16", eager_us=1e3 * eager_ms,
                graph_us=1e3 * graph_ms, state_GBps=nbytes / graph_ms / 1e6)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conv-tokens", type=int, default=32768)
    parser.add_argument("--channels", type=int, default=1536)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--inner", type=int, default=20, help="conv calls per timing")
    parser.add_argument("--profile", action="store_true", help="per-kernel times of conv fwd + bwd")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    conv = bench_conv(args.conv_tokens, args.channels, args.warmup, args.repeats, args.inner)
    print(f"causal_conv1d_silu  B=1 T={conv['T']} E={conv['E']} W=4 bf16")
    print(f"{'':<6} {'ms':>8} {'GB/s':>8}")
    for name in ("copy", "fwd", "bwd"):
        print(f"{name:<6} {conv[name + '_ms']:>8.3f} {conv[name + '_GBps']:>8.0f}")
    if args.profile:
        conv["kernels_ms"] = profile_conv(args.conv_tokens, args.channels)
        for name, ms, count in conv["kernels_ms"]:
            print(f"    {ms:8.3f}  x{count:<3} {name[:90]}")
    decode = []
    print(f"\nrecurrent_delta_scan decode step  T=1 H={args.heads} D={args.head_dim} bf16, with state")
    print(f"{'B':>3} {'P':>2} {'eager us':>9} {'graph us':>9} {'GB/s':>7}")
    for B in args.batches:
        for P in args.pairs:
            r = bench_decode(B, P, args.heads, args.head_dim, args.steps, args.warmup, args.repeats)
            decode.append(r)
            print(f"{B:>3} {P:>2} {r['eager_us']:>9.1f} {r['graph_us']:>9.2f} {r['state_GBps']:>7.0f}",
                  flush=True)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda)
    print(meta)
    if args.json:
        write_json(args.json, dict(meta=meta, conv=conv, decode=decode))


if __name__ == "__main__":
    main()
