"""GPU memory breakdown of one block's compiled fwd+bwd step (bench_gpu.py's block rows), and of
the scan op inside it, bf16, --tokens tokens per step, d_model 768.

For the CD-SSM block (with its selective recomputation, and "(keep)": keeping every activation)
and the Transformer block at each L in --lengths (B = tokens / L), after a warm-up step, in MiB
above the weights, their gradients and the input:
  saved     held after the forward (the output and what autograd keeps for the backward),
  fwd peak  the most held during the forward,
  bwd peak  the most held during the backward (the saved tensors are freed as it goes);
and for chunk_delta_scan alone at the block's shapes (H 24, D 64, P --pairs):
  fwd peak above its inputs, and the outputs it keeps (o, boundary states, final state),
  bwd peak above its inputs, outputs and output gradients.
A step's peak is the larger of fwd peak and bwd peak; bench_gpu.py reports that figure.

Example: python tools/bench_block_memory.py --json runs/bench_block_memory.json
"""

import argparse
import json

import torch

from bench_gpu import block_forward_bf16
from bench_scan_gpu import scan_inputs

from cdssm.files import write_json
from cdssm.ops import chunk_delta_scan

MiB = 2 ** 20


def _mib_since(base):
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / MiB, (torch.cuda.memory_allocated() - base) / MiB


def block_memory(arch, L, B, recompute=True):
    forward, grad = block_forward_bf16(arch, L, B, recompute)
    forward().backward(grad)  # compile, and allocate the weights' gradients
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = forward()
    fwd_peak, saved = _mib_since(base)
    torch.cuda.reset_peak_memory_stats()
    y.backward(grad)
    bwd_peak, _ = _mib_since(base)
    return {"arch": arch if recompute else f"{arch} (keep)", "L": L, "B": B, "saved_mib": saved,
            "fwd_peak_mib": fwd_peak, "bwd_peak_mib": bwd_peak}


def scan_memory(L, B, P):
    args = scan_inputs(B, L, 24, 64, P, torch.bfloat16)
    grad_o = torch.randn(B, L, 24, P, 2, device="cuda").to(torch.bfloat16)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    o, final = chunk_delta_scan(*args, output_final_state=True)
    fwd_peak, kept = _mib_since(base)
    grad_final = torch.ones_like(final)
    torch.cuda.synchronize()
    base_bwd = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.autograd.backward([o, final], [grad_o, grad_final])
    bwd_peak, _ = _mib_since(base_bwd)
    return {"L": L, "B": B, "P": P, "fwd_peak_mib": fwd_peak, "kept_mib": kept,
            "bwd_peak_mib": bwd_peak}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 32768])
    p.add_argument("--tokens", type=int, default=32768, help="tokens per step (B = tokens / L)")
    p.add_argument("--pairs", type=int, nargs="+", default=[1, 8], help="state pairs of the scan rows")
    p.add_argument("--json", default="runs/bench_block_memory.json")
    a = p.parse_args(argv)
    for L in a.lengths:
        if L < 1 or a.tokens % L:
            p.error(f"--lengths: each length must divide --tokens {a.tokens}, got {L}")
    if any(P < 1 for P in a.pairs):
        p.error(f"--pairs: each must be ≥ 1, got {a.pairs}")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")

    blocks, scans = [], []
    for L in a.lengths:
        for arch, recompute in (("cdssm", True), ("cdssm", False), ("transformer", True)):
            blocks.append(block_memory(arch, L, a.tokens // L, recompute))
            print(json.dumps(blocks[-1]), flush=True)
            torch._dynamo.reset()
        for P in a.pairs:
            scans.append(scan_memory(L, a.tokens // L, P))
            print(json.dumps(scans[-1]), flush=True)

    print(f"\nblock fwd+bwd memory, MiB ({torch.cuda.get_device_name()}, bf16, {a.tokens} tokens)")
    print(f"{'arch':>14} {'L':>6} {'saved':>7} {'fwd peak':>9} {'bwd peak':>9}")
    for r in blocks:
        print(f"{r['arch']:>14} {r['L']:>6} {r['saved_mib']:>7.0f} {r['fwd_peak_mib']:>9.0f} "
              f"{r['bwd_peak_mib']:>9.0f}")
    print(f"\nchunk_delta_scan alone (H 24, D 64), MiB")
    print(f"{'L':>6} {'P':>3} {'fwd peak':>9} {'kept':>7} {'bwd peak':>9}")
    for r in scans:
        print(f"{r['L']:>6} {r['P']:>3} {r['fwd_peak_mib']:>9.0f} {r['kept_mib']:>7.0f} {r['bwd_peak_mib']:>9.0f}")
    write_json(a.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                        "tokens": a.tokens, "block": blocks, "scan": scans})
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
