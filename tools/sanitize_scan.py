"""A small chunk_delta_scan fwd+bwd on CUDA for compute-sanitizer (every kernel of the scan runs).

bf16 and float32, B=2, T=200, H=2, D=64, P=2 with an initial state, then varlen (cu_seqlens
with an empty sequence) at B=1, then both at T=8320 (130 chunks in 2 to 8 chains: the two-level
state chain); each once with unit q, k rows and once as the block calls it (raw rows, k read in
place from a wider projection, normalised inside the kernels by l2_norm_eps).
Run under the sanitizer:

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 tools/sanitize_scan.py
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from cdssm.ops import chunk_delta_scan  # noqa: E402
from scan_cases import make_inputs, raw_rows, token_rows  # noqa: E402


def run(dtype, B, T, lengths, l2_rows):
    cu = None
    n_states = B
    if lengths is not None:
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        cu = torch.tensor(offsets, dtype=torch.int32, device="cuda")
        n_states = len(lengths)
    inputs = make_inputs(B, T, 2, 64, 2, dtype=dtype, initial_state=True, n_states=n_states)
    inputs = [t.cuda() for t in inputs]
    if l2_rows:  # k a strided view into a wider CUDA tensor
        inputs[0], inputs[1] = raw_rows(inputs[0], 1), token_rows(raw_rows(inputs[1], 2), 3)
    inputs = [t.detach().requires_grad_() for t in inputs]
    o, final = chunk_delta_scan(*inputs, cu_seqlens=cu, output_final_state=True,
                                l2_norm_eps=1e-6 if l2_rows else None)
    torch.autograd.backward([o, final], [torch.randn_like(o), torch.randn_like(final)])
    torch.cuda.synchronize()
    grads = [t.grad for t in inputs]
    assert all(torch.isfinite(g).all() for g in grads), "non-finite gradient"
    print(f"{str(dtype):<15} B={B} T={T} lengths={lengths} l2_rows={l2_rows}: ok", flush=True)


def main():
    for dtype in (torch.bfloat16, torch.float32):
        for l2_rows in (False, True):
            run(dtype, 2, 200, None, l2_rows)
            run(dtype, 1, 200, [70, 0, 129, 1], l2_rows)
            run(dtype, 1, 8320, None, l2_rows)
            run(dtype, 1, 8320, [4000, 0, 37, 4283], l2_rows)


if __name__ == "__main__":
    main()
