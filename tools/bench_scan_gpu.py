"""GPU benchmark of chunk_delta_scan: forward and forward+backward times, bf16, 32k tokens a step.

For T in --lengths (B = tokens / T), H heads, D = 64, P in --pairs: the median of --repeats
CUDA-event-timed calls after --warmup calls, of
  fwd      chunk_delta_scan under no_grad,
  fwd+bwd  chunk_delta_scan then autograd backward of all inputs (incl. the initial state),
and, with --profile, the per-kernel device times of one fwd+bwd (torch.profiler).
With --l2-rows the scan runs as the block calls it: q and k raw (not unit) rows, k read in place
as the middle third of a (B, T, 3·H·D) projection, normalised inside the kernels
(``l2_norm_eps``). Prints a table and writes JSON.

Example: python tools/bench_scan_gpu.py --json runs/bench_scan_gpu.json
"""

import argparse

import torch

from cuda_timing import cuda_time_ms, kernel_times

from cdssm.ops import chunk_delta_scan
from cdssm.files import write_json


def scan_inputs(B, T, H, D, P, dtype, l2_rows, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    if l2_rows:  # raw rows; k the middle third of a wider projection (the in_proj output)
        q = randn(B, T, H, D).to(dtype)
        k = randn(B, T, 3, H, D).to(dtype)[:, :, 1].detach()
    else:
        q = torch.nn.functional.normalize(randn(B, T, H, D), dim=-1).to(dtype)
        k = torch.nn.functional.normalize(randn(B, T, H, D), dim=-1).to(dtype)
    v = randn(B, T, H, P, 2).to(dtype)
    beta = torch.rand(B, T, H, generator=g, device="cuda").to(dtype)
    log_decay = -0.1 * torch.rand(B, T, H, P, generator=g, device="cuda")
    phase = torch.rand(B, T, H, P, generator=g, device="cuda")
    s0 = randn(B, H, 2 * P, D)
    return [t.requires_grad_() for t in (q, k, v, beta, log_decay, phase, s0)]


def scan_options(l2_rows):
    """chunk_delta_scan's keyword arguments for these inputs (normalised inside with l2_rows)."""
    return dict(output_final_state=True, l2_norm_eps=1e-6 if l2_rows else None)


def bench_one(B, T, H, D, P, dtype, l2_rows, warmup, repeats):
    args = scan_inputs(B, T, H, D, P, dtype, l2_rows)
    grad_o = torch.randn(B, T, H, P, 2, device="cuda").to(dtype)
    options = scan_options(l2_rows)

    def fwd():
        with torch.no_grad():
            chunk_delta_scan(*args, **options)

    def step():
        o, final = chunk_delta_scan(*args, **options)
        torch.autograd.backward([o, final], [grad_o, torch.ones_like(final)])

    return cuda_time_ms(fwd, warmup, repeats), cuda_time_ms(step, warmup, repeats), step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="per-kernel times at the largest T, P = 1")
    parser.add_argument("--l2-rows", action="store_true",
                        help="raw q, k rows (k strided) normalised inside the kernels, as the block calls it")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    dtype = torch.bfloat16
    results = []
    print(f"{'B':>3} {'T':>6} {'H':>3} {'D':>3} {'P':>2} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    for T in args.lengths:
        B = max(args.tokens // T, 1)
        for P in args.pairs:
            fwd_ms, step_ms, step = bench_one(B, T, args.heads, args.head_dim, P, dtype,
                                              args.l2_rows, args.warmup, args.repeats)
            print(f"{B:>3} {T:>6} {args.heads:>3} {args.head_dim:>3} {P:>2} {fwd_ms:>9.3f} {step_ms:>11.3f}",
                  flush=True)
            results.append(dict(B=B, T=T, H=args.heads, D=args.head_dim, P=P, dtype="bfloat16",
                                l2_rows=args.l2_rows, fwd_ms=fwd_ms, fwd_bwd_ms=step_ms))
            if args.profile and T == max(args.lengths) and P == min(args.pairs):
                kernels = kernel_times(step)
                print("  per-kernel device time of one fwd+bwd (ms):")
                for name, ms, count in kernels[:12]:
                    print(f"    {ms:8.3f}  x{count:<3} {name[:90]}")
                results[-1]["kernels_ms"] = kernels
            del step
            torch.cuda.empty_cache()
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda)
    print(meta)
    if args.json:
        write_json(args.json, dict(meta=meta, results=results))


if __name__ == "__main__":
    main()
