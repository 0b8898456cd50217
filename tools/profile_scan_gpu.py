"""One fwd+bwd of chunk_delta_scan (bf16, B=1, T=32768, H=24, D=64, P=1 by default), for profilers.

With --l2-rows the scan runs as the block calls it (raw q, k rows normalised inside the kernels;
see bench_scan_gpu.py).

Example: ncu --clock-control none -k regex:chunk_bwd -c 1 python tools/profile_scan_gpu.py --l2-rows
"""

import argparse

import torch

from bench_scan_gpu import scan_inputs, scan_options
from cdssm.ops import chunk_delta_scan


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--T", type=int, default=32768)
    parser.add_argument("--H", type=int, default=24)
    parser.add_argument("--P", type=int, default=1)
    parser.add_argument("--l2-rows", action="store_true", help="raw q, k rows normalised inside the kernels")
    args = parser.parse_args()
    inputs = scan_inputs(args.B, args.T, args.H, 64, args.P, torch.bfloat16, args.l2_rows)
    o, final = chunk_delta_scan(*inputs, **scan_options(args.l2_rows))
    torch.autograd.backward([o, final], [torch.randn_like(o), torch.ones_like(final)])
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
