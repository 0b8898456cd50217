"""Where a block's fwd+bwd step spends its GPU time: per-kernel device times (torch.profiler) of
bench_gpu.py's compiled block step (bf16 autocast, --tokens tokens per step, d_model 768), grouped.

Groups, by kernel name: matmul (cuBLAS / CUTLASS), scan (the chunk_delta_scan kernels), conv
(causal_conv1d_silu), attention (flash SDPA), fused elementwise (Inductor's Triton kernels),
other. Prints, per arch, the groups' ms and share and the --top kernels; writes JSON.

Example: python tools/profile_block_gpu.py --length 2048 --json runs/profile_block.json
"""

import argparse
import re

import torch

from bench_gpu import add_block_shape_args, block_shape, block_step
from cuda_timing import kernel_times

from cdssm.files import write_json

GROUPS = (  # (group, pattern on the kernel name), the first match wins
    ("scan", r"(chunk_prepare|chunk_output|chunk_bwd|bwd_local|state_chain|segment_maps|segment_chain"
             r"|sequence_table)_kernel"),
    ("conv", r"conv_(fwd|bwd|param_reduce|final_state|grad_initial)_kernel"),
    ("attention", r"flash|fmha|attention"),
    ("matmul", r"gemm|cutlass|nvjet|xmma|cublas|splitK|sm90_"),
    ("fused elementwise", r"^triton_"),
)


def group_of(name: str) -> str:
    return next((g for g, pattern in GROUPS if re.search(pattern, name)), "other")


def profile_arch(arch: str, L: int, B: int) -> dict:
    kernels = kernel_times(block_step(arch, L, B))
    groups = {}
    for name, ms, _ in kernels:
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + ms
    return {"arch": arch, "L": L, "B": B, "total_ms": sum(ms for _, ms, _ in kernels),
            "groups_ms": dict(sorted(groups.items(), key=lambda g: -g[1])),
            "kernels": [{"name": n, "ms": ms, "launches": c, "group": group_of(n)}
                        for n, ms, c in kernels]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_block_shape_args(p)
    p.add_argument("--arch", nargs="+", choices=("cdssm", "transformer"),
                   default=["cdssm", "transformer"])
    p.add_argument("--top", type=int, default=25, help="kernels listed per arch")
    p.add_argument("--json", default="runs/profile_block_gpu.json")
    a = p.parse_args(argv)
    L, B = block_shape(p, a)
    rows = []
    for arch in a.arch:
        r = profile_arch(arch, L, B)
        rows.append(r)
        print(f"\n{arch} block fwd+bwd, L {L}, B {r['B']}: {r['total_ms']:.3f} ms of kernels")
        for g, ms in r["groups_ms"].items():
            print(f"  {g:18s} {ms:8.3f} ms {100 * ms / r['total_ms']:5.1f} %")
        for k in r["kernels"][:a.top]:
            print(f"    {k['ms']:7.3f} x{k['launches']:<3} {k['group'][:6]:6s} {k['name'][:100]}")
        torch._dynamo.reset()
    write_json(a.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                        "tokens_per_step": a.tokens, "rows": rows})
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
