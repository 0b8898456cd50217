"""Bit-for-bit comparison of chunk_delta_scan between two builds, for kernel changes meant to
leave the arithmetic unchanged (same values into the same operations in the same order).

Runs fwd+bwd on fixed seeded inputs (bf16, fp16, fp32 and fp64, P = 1 and 2, decays "random"
and "near_one", B=2 T=200 with an initial state, varlen [70, 0, 129, 1], and B=1 T=4096 H=4) and
either saves the outputs o, final state and every input gradient (--save FILE), or compares them
with a saved file (--compare FILE; exit status 1 if any tensor differs in any bit). Every case
runs twice first: the scan must be deterministic for the comparison to mean anything.

    python3 tools/scan_bitwise.py --save /tmp/before.pt      # build A
    python3 tools/scan_bitwise.py --compare /tmp/before.pt   # build B
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from cdssm.files import atomic_write  # noqa: E402
from cdssm.ops import chunk_delta_scan  # noqa: E402
from scan_cases import cu_seqlens_from_lengths, make_cotangents, make_inputs  # noqa: E402

NAMES = ("o", "final", "dq", "dk", "dv", "dbeta", "dlog_decay", "dphase", "dinitial_state")


def cases():
    """(name, B, T, H, P, dtype, decay, lengths) of every case."""
    out = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        for P in (1, 2):
            for decay in ("random", "near_one"):
                out.append((2, 200, 2, P, dtype, decay, None))
                out.append((1, 200, 2, P, dtype, decay, [70, 0, 129, 1]))
        out.append((1, 4096, 4, 1, dtype, "random", None))
    return [(f"{str(dt).split('.')[-1]} B={B} T={T} H={H} P={P} {decay} lengths={ls}", B, T, H, P, dt, decay, ls)
            for B, T, H, P, dt, decay, ls in out]


def run(B, T, H, P, dtype, decay, lengths, device):
    """Outputs and input gradients of one fwd+bwd, on the CPU, in NAMES order."""
    n_states = B if lengths is None else len(lengths)
    cu = cu_seqlens_from_lengths(lengths)
    cu = None if cu is None else cu.to(device)
    inputs = make_inputs(B, T, H, 64, P, dtype=dtype, decay=decay, initial_state=True, n_states=n_states)
    inputs = [t.to(device).requires_grad_() for t in inputs]
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    grad_o, grad_final = make_cotangents(B, T, H, 64, P, n_states, dtype=dtype, state_dtype=state_dtype)
    o, final = chunk_delta_scan(*inputs, cu_seqlens=cu, output_final_state=True)
    torch.autograd.backward([o, final], [grad_o.to(device), grad_final.to(device)])
    return [t.detach().cpu() for t in [o, final] + [x.grad for x in inputs]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", metavar="FILE", help="write every case's tensors to FILE")
    mode.add_argument("--compare", metavar="FILE", help="compare every case's tensors with FILE, bit for bit")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test of this tool)")
    args = parser.parse_args()
    results, failed = {}, 0
    for name, *case in cases():
        first, second = run(*case, args.device), run(*case, args.device)
        if not all(torch.equal(a, b) for a, b in zip(first, second)):
            print(f"NONDETERMINISTIC {name}", flush=True)
            failed += 1
        results[name] = first
    if args.save:
        atomic_write(args.save, lambda tmp: torch.save(results, tmp))
        print(f"saved {len(results)} cases to {args.save}; {failed} nondeterministic")
        sys.exit(1 if failed else 0)
    saved = torch.load(args.compare)
    for name, tensors in results.items():
        if name not in saved:
            print(f"MISSING {name}")
            failed += 1
            continue
        diffs = [f"{n} (max |Δ| {(a.double() - b.double()).abs().max().item():.3g})"
                 for n, a, b in zip(NAMES, tensors, saved[name]) if not torch.equal(a, b)]
        print(f"{'DIFFER' if diffs else 'SAME  '} {name}" + (": " + ", ".join(diffs) if diffs else ""), flush=True)
        failed += bool(diffs)
    print(f"{len(results) - failed}/{len(results)} cases bit-identical")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
