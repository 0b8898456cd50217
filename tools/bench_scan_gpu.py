"""GPU benchmark of chunk_delta_scan: forward and forward+backward times, bf16, 32k tokens a step.

For T in --lengths (B = tokens / T), H heads, D = 64, P in --pairs: the median of --repeats
CUDA-event-timed calls after --warmup calls, of
  fwd      chunk_delta_scan under no_grad,
  fwd+bwd  chunk_delta_scan then autograd backward of all inputs (incl. the initial state),
and, with --profile, the per-kernel device times of one fwd+bwd (torch.profiler), with each chunk
kernel's memory floor in this design beside it (tools/roofline.py, chunk_kernel_bytes).
With --l2-rows the scan runs as the block calls it: q and k raw (not unit) rows, k read in place
as the middle third of a (B, T, 3·H·D) projection, normalised inside the kernels
(``l2_norm_eps``). "% roof" is the fwd+bwd's fraction of its roofline: the bytes the scan must
move (tools/roofline.py) at the device-to-device copy rate measured in the same run. Prints a
table and writes JSON.
With --peers, then, in the same run: flash-linear-attention's chunk_gated_delta_rule (Gated
DeltaNet's scan, tools/peers.py) at each (B, T) with K = V = D, timed the same way, beside each
of our rows at that T with the time ratio CD-SSM / fla; with --l2-rows fla gets raw q, k rows
too, normalised by fla (use_qk_l2norm_in_kernel: its L2-norm kernels around its scan's, timed).
fla's state per head is V × K = D × D, ours 2P × D (equal at 2P = D): the rows compare the scans
at equal (B, T, H, D), not equal state size.

Example: python tools/bench_scan_gpu.py --json runs/bench_scan_gpu.json
"""

import argparse

import torch

import peers
from cuda_timing import copy_bandwidth_gbs, cuda_time_ms, forward_and_step, kernel_times
from roofline import chunk_kernel_bytes, kernel_floors, roofline_ms, scan_floor_bytes

from cdssm.ops import chunk_delta_scan
from cdssm.files import write_json


CHUNK = 64  # chunk_delta_scan's default chunk length, which the benchmark runs


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


def scan_steps(B, T, H, D, P, dtype, l2_rows):
    """(fwd, step) of chunk_delta_scan on scan_inputs: fwd under no_grad; step backpropagates an
    N(0, 1) cotangent of o (B, T, H, P, 2) and ones of the final state into every input."""
    args = scan_inputs(B, T, H, D, P, dtype, l2_rows)
    grad_o = torch.randn(B, T, H, P, 2, device="cuda").to(dtype)
    options = scan_options(l2_rows)
    return forward_and_step(lambda: chunk_delta_scan(*args, **options), grad_o)


def time_steps(fwd, step, warmup, repeats):
    """(fwd ms, fwd+bwd ms, step): median device times of fwd() and step() (cuda_time_ms)."""
    return cuda_time_ms(fwd, warmup, repeats), cuda_time_ms(step, warmup, repeats), step


PEER_HEADER = (f"{'B':>3} {'T':>6} {'P':>2} {'fwd ms':>9} {'fla fwd':>9} {'ratio':>6} "
               f"{'fwd+bwd ms':>11} {'fla fwd+bwd':>11} {'ratio':>6}")


def peer_lines(rows, peer):
    """PEER_HEADER's lines: each of our result rows (dicts with B, T, P, fwd_ms, fwd_bwd_ms)
    beside the fla row at their (B, T), with the time ratios ours / fla (< 1: ours faster)."""
    return [f"{r['B']:>3} {r['T']:>6} {r['P']:>2} {r['fwd_ms']:>9.3f} {peer['fwd_ms']:>9.3f} "
            f"{r['fwd_ms'] / peer['fwd_ms']:>6.2f} {r['fwd_bwd_ms']:>11.3f} "
            f"{peer['fwd_bwd_ms']:>11.3f} {r['fwd_bwd_ms'] / peer['fwd_bwd_ms']:>6.2f}"
            for r in rows]


def bench_peers(args, dtype, results):
    """The fla rows at each of args.lengths, printed beside ours (results) as they are timed."""
    version, H, D, note = peers.fla_version(), args.heads, args.head_dim, peers.lift_triton_guard()
    given = ("raw q, k rows normalised by fla (use_qk_l2norm_in_kernel), as --l2-rows"
             if args.l2_rows else "unit q, k rows")
    print(f"\nfla {version} chunk_gated_delta_rule at P = 1's shape (H {H}, K = V = {D}, "
          f"fp32 state; {given}); ratio = time CD-SSM / fla" + (f"\n{note}" if note else ""))
    print(PEER_HEADER)
    rows = []
    for T in args.lengths:
        B = max(args.tokens // T, 1)
        fwd_ms, step_ms, step = time_steps(*peers.fla_scan_steps(B, T, H, D, D, dtype, args.l2_rows),
                                           args.warmup, args.repeats)
        rows.append(dict(impl=f"fla {version} chunk_gated_delta_rule", B=B, T=T, H=H, K=D, V=D,
                         dtype="bfloat16", use_qk_l2norm_in_kernel=args.l2_rows,
                         fwd_ms=fwd_ms, fwd_bwd_ms=step_ms, **({"note": note} if note else {})))
        for line in peer_lines([r for r in results if r["T"] == T], rows[-1]):
            print(line, flush=True)
        del step
        torch.cuda.empty_cache()
    return rows


def main(argv=None):
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
    parser.add_argument("--peers", action="store_true",
                        help="also time flash-linear-attention's chunk_gated_delta_rule at each (B, T) "
                             "in this run, with the time ratio CD-SSM / fla (needs fla 0.6.0: "
                             "tools/fetch_peer_wheels.sh)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.peers:
        peers.require_fla(parser, "fla.ops.gated_delta_rule")
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    dtype = torch.bfloat16
    bandwidth = copy_bandwidth_gbs()
    results = []
    print(f"{'B':>3} {'T':>6} {'H':>3} {'D':>3} {'P':>2} {'fwd ms':>9} {'fwd+bwd ms':>11} {'% roof':>7}")
    for T in args.lengths:
        B = max(args.tokens // T, 1)
        for P in args.pairs:
            fwd_ms, step_ms, step = time_steps(*scan_steps(B, T, args.heads, args.head_dim, P, dtype,
                                                           args.l2_rows), args.warmup, args.repeats)
            floor_ms = roofline_ms(nbytes=scan_floor_bytes(B * T, args.heads, args.head_dim, P),
                                   bandwidth_gbs=bandwidth)
            print(f"{B:>3} {T:>6} {args.heads:>3} {args.head_dim:>3} {P:>2} {fwd_ms:>9.3f} {step_ms:>11.3f} "
                  f"{100 * floor_ms / step_ms:>7.1f}", flush=True)
            results.append(dict(B=B, T=T, H=args.heads, D=args.head_dim, P=P, dtype="bfloat16",
                                l2_rows=args.l2_rows, fwd_ms=fwd_ms, fwd_bwd_ms=step_ms,
                                floor_ms=floor_ms, roofline_fraction=floor_ms / step_ms))
            if args.profile and T == max(args.lengths) and P == min(args.pairs):
                chunk_heads = B * -(-T // CHUNK) * args.heads
                kernels = kernel_floors(kernel_times(step), chunk_kernel_bytes(CHUNK, args.head_dim, P, args.l2_rows),
                                        chunk_heads, bandwidth)
                print("  per-kernel device time of one fwd+bwd (ms), and the chunk kernels' memory floor "
                      "(tools/roofline.py, design):")
                for name, ms, count, floor in kernels[:12]:
                    share = f"{floor:6.3f} {100 * floor / ms:4.0f} %" if floor else " " * 13
                    print(f"    {ms:8.3f}  x{count:<3} {share}  {name[:80]}")
                design = sum(f for *_, f in kernels if f)
                print(f"  this design's memory floor {design:.3f} ms (the kernels above), the scan's own "
                      f"{floor_ms:.3f} ms")
                results[-1].update(kernels_ms=kernels, design_floor_ms=design)
            del step
            torch.cuda.empty_cache()
    out = dict(results=results)
    if args.peers:
        out["peers"] = bench_peers(args, dtype, results)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                copy_bandwidth_gbs=bandwidth)
    print(meta)
    if args.json:
        write_json(args.json, dict(meta=meta, **out))


if __name__ == "__main__":
    main()
