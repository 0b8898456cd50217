"""GPU validation: every CUDA kernel against the CPU kernel in float64, as pass/fail tables.

For each case the inputs are drawn once, rounded to the case's dtype, and run through
  - the CUDA ops (chunk_delta_scan, recurrent_delta_scan, causal_conv1d_silu; fwd and bwd) in
    that dtype, and
  - the CPU ops in float64 on the same rounded values (the CPU kernels match the float64 oracles
    and autograd, tests/test_delta_scan.py, tests/test_causal_conv1d.py),
and every output (o, final state, boundary states, state energy; y, final conv state) and every
gradient is compared by ‖out − ref‖ / ‖ref‖. The CUDA caching allocator is filled with NaN before
each call, so an output element the kernels never write shows up as NaN. Then: invalid cu_seqlens
give NaN (no host sync), the decode step replays from a CUDA graph, and torch.library.opcheck runs
on CUDA samples of every op.

Example: python tools/gpu_check.py [--ops chunk,recurrent,conv] [--json runs/gpu_check.json]
(exits 1 on any failure)
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import cdssm.ops  # noqa: E402,F401  (loads the op library)
from cdssm.files import write_json  # noqa: E402
from scan_cases import (cu_seqlens_from_lengths, make_cotangents, make_inputs,  # noqa: E402
                        raw_rows, relative_error, token_rows)

OPS = torch.ops.cdssm
# ‖out − ref‖ / ‖ref‖ allowed per dtype (outputs are rounded to the dtype; state math is fp32).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1.5e-2}
FWD_NAMES = ("o", "final", "boundary", "energy")
GRAD_NAMES = ("dq", "dk", "dv", "dbeta", "dlog_decay", "dphase", "dinitial")
CONV_NAMES = ("y", "final")
CONV_GRAD_NAMES = ("dx", "dweight", "dbias", "dinitial")


def cases():
    """(name, dtype, B, T, H, D, P, C, decay, initial_state, sequence lengths or None).

    "l2_rows": the model's call: raw (not unit) q, k read in place as token rows of a
    (B, T, 3·H·D) projection and normalised inside the kernels (l2_norm_eps)."""
    out = []
    small = [  # the CPU tests' shapes
        (2, 50, 2, 16, 1, 16, "random", True, None),
        (1, 64, 3, 8, 2, 32, "near_one", True, None),
        (1, 100, 2, 8, 1, 64, "small", True, None),
        (1, 40, 2, 8, 2, 16, "zero", True, None),
        (2, 7, 2, 8, 8, 64, "random", True, None),
        (1, 129, 1, 64, 1, 64, "random", True, None),
        (1, 33, 2, 4, 8, 32, "near_one", False, None),
        (1, 30, 2, 4, 8, 8, "small", True, None),
        (1, 26, 1, 8, 2, 8, "random", True, [9, 0, 17]),
        (1, 63, 2, 8, 1, 64, "random", False, [5, 0, 40, 17, 1]),
        (1, 63, 2, 8, 8, 16, "random", True, [5, 0, 40, 17, 1]),
    ]
    for dtype in (torch.float64, torch.float32):
        for B, T, H, D, P, C, decay, init, lengths in small:
            out.append(("small", dtype, B, T, H, D, P, C, decay, init, lengths))
    for dtype in (torch.float32, torch.bfloat16):
        for P in (1, 2, 8):
            out.append(("chunk64", dtype, 4, 1000, 3, 64, P, 64, "random", True, None))
            out.append(("varlen", dtype, 1, 4001, 2, 64, P, 64, "random", True,
                        [100, 0, 3000, 64, 1, 836]))
        out.append(("l2_rows", dtype, 4, 1000, 3, 64, 2, 64, "random", True, None))
        out.append(("l2_rows", dtype, 1, 4001, 2, 64, 2, 64, "random", True,
                    [100, 0, 3000, 64, 1, 836]))
        out.append(("long", dtype, 1, 32768, 2, 64, 1, 64, "random", True, None))
        out.append(("long_slow", dtype, 1, 32768, 2, 64, 2, 64, "near_one", True, None))
        out.append(("long_varlen", dtype, 1, 20000, 2, 64, 2, 64, "random", True,
                    [9000, 0, 37, 10963]))
    out.append(("fp16", torch.float16, 2, 500, 2, 64, 2, 64, "random", True, None))
    return out


L2_NORM_EPS = 1e-6  # the model's


def _poison_cuda_allocator(nbytes=1 << 30):
    """Fill the caching allocator's free blocks with NaN so unwritten outputs are visible."""
    torch.empty(nbytes // 4, device="cuda").fill_(float("nan"))


def run_case(case, seed):
    name, dtype, B, T, H, D, P, C, decay, init, lengths = case
    cu = None if lengths is None else cu_seqlens_from_lengths(lengths)
    N = B if cu is None else len(lengths)
    q, k, v, beta, ld, ph, s0 = make_inputs(B, T, H, D, P, dtype=dtype, decay=decay,
                                            initial_state=init, n_states=N, seed=seed)
    grad_o, grad_final = make_cotangents(B, T, H, D, P, N, dtype=dtype, state_dtype=ld.dtype,
                                         seed=seed + 1)
    eps = L2_NORM_EPS if name == "l2_rows" else None
    if eps is not None:
        q, k = raw_rows(q, seed + 2), raw_rows(k, seed + 3)
    cpu64 = [None if t is None else t.double() for t in (q, k, v, beta, ld, ph, s0)]
    ref_fwd = OPS.chunk_delta_scan_fwd(*cpu64, cu, C, eps)
    ref_bwd = OPS.chunk_delta_scan_bwd(grad_o.double(), grad_final.double(), *cpu64[:6], ref_fwd[2],
                                       cu, C, eps)
    dev = [None if t is None else t.cuda() for t in (q, k, v, beta, ld, ph, s0)]
    if eps is not None:
        dev[:2] = [token_rows(dev[0], seed + 4), token_rows(dev[1], seed + 5)]
    cu_d = None if cu is None else cu.cuda()
    _poison_cuda_allocator()
    fwd = OPS.chunk_delta_scan_fwd(*dev, cu_d, C, eps)
    _poison_cuda_allocator()
    bwd = OPS.chunk_delta_scan_bwd(grad_o.cuda(), grad_final.cuda(), *dev[:6], fwd[2], cu_d, C,
                                   eps)
    torch.cuda.synchronize()
    errs = {n: relative_error(a, b) for n, a, b in zip(FWD_NAMES, fwd, ref_fwd)}
    grads = {n: relative_error(a, b) for n, a, b in zip(GRAD_NAMES, bwd, ref_bwd)}
    return errs, grads


def recurrent_cases():
    """(name, dtype, B, T, H, D, P, decay, initial_state, sequence lengths or None)."""
    out = []
    small = [
        (2, 50, 2, 16, 1, "random", True, None),
        (1, 64, 3, 8, 2, "near_one", True, None),
        (1, 40, 2, 8, 2, "zero", True, None),
        (2, 7, 2, 8, 8, "random", True, None),
        (1, 100, 2, 64, 1, "small", True, None),
        (1, 33, 2, 4, 8, "near_one", False, None),
        (1, 20, 2, 100, 3, "random", True, None),   # D > 64: 4 entries a lane
        (1, 5, 1, 200, 2, "random", True, None),    # D > 128: 8 entries a lane
        (1, 10, 2, 16, 20, "random", True, None),   # P > 16: warps loop over pairs
        (1, 26, 1, 8, 2, "random", True, [9, 0, 17]),
        (1, 63, 2, 8, 8, "random", False, [5, 0, 40, 17, 1]),
    ]
    for dtype in (torch.float64, torch.float32):
        for case in small:
            out.append(("small", dtype, *case))
    for dtype in (torch.float32, torch.bfloat16):
        for B, P in ((1, 1), (64, 1), (64, 8), (1, 8)):
            out.append(("decode", dtype, B, 1, 24, 64, P, "random", True, None))
        out.append(("decode", dtype, 1, 4, 24, 64, 2, "random", True, [1, 0, 1, 1, 1]))
        out.append(("short", dtype, 4, 64, 24, 64, 2, "random", True, None))
        out.append(("short", dtype, 1, 300, 4, 64, 8, "near_one", True, [100, 0, 199, 1]))
    out.append(("fp16", torch.float16, 2, 50, 4, 64, 2, "random", True, None))
    return out


def conv_cases():
    """(name, dtype, B, T, E, W, initial_state, sequence lengths or None); "in_proj" reads x
    in place from (B, T, 3E) rows, as the model does."""
    out = []
    small = [  # the CPU tests' shapes, W from 1 to 8, varlen with empty and short sequences
        (2, 9, 5, 4, True, None),
        (1, 3, 70, 4, True, None),
        (3, 6, 3, 1, False, None),
        (2, 2, 4, 6, True, None),
        (1, 16, 130, 3, True, None),
        (2, 100, 64, 8, True, None),
        (1, 10, 64, 4, True, [3, 0, 1, 6]),
        (1, 9, 16, 4, True, [0, 2, 7, 0]),
        (1, 70, 256, 7, False, [5, 0, 2, 63]),
    ]
    for dtype in (torch.float64, torch.float32):
        for case in small:
            out.append(("small", dtype, *case))
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        out.append(("model", dtype, 4, 1000, 1536, 4, True, None))
        out.append(("varlen", dtype, 1, 4001, 1536, 4, True, [100, 0, 3000, 64, 1, 836]))
        out.append(("decode", dtype, 64, 1, 1536, 4, True, None))
        out.append(("in_proj", dtype, 4, 1000, 1536, 4, True, None))
    out.append(("long", torch.bfloat16, 1, 32768, 1536, 4, True, None))
    out.append(("long", torch.float32, 1, 32768, 768, 4, False, None))
    return out


def _errors(names, outs, refs):
    return {n: relative_error(a, b) for n, a, b in zip(names, outs, refs)}


def run_recurrent_case(case, seed):
    name, dtype, B, T, H, D, P, decay, init, lengths = case
    cu = None if lengths is None else cu_seqlens_from_lengths(lengths)
    N = B if cu is None else len(lengths)
    inputs = make_inputs(B, T, H, D, P, dtype=dtype, decay=decay, initial_state=init, n_states=N,
                         seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    grad_o = torch.randn(B, T, H, P, 2, generator=gen, dtype=torch.float64).to(dtype)
    grad_final = torch.randn(N, H, 2 * P, D, generator=gen, dtype=torch.float64).to(inputs[4].dtype)
    cpu64 = [None if t is None else t.double() for t in inputs]
    ref_fwd = OPS.recurrent_delta_scan_fwd(*cpu64, cu)
    ref_bwd = OPS.recurrent_delta_scan_bwd(grad_o.double(), grad_final.double(), *cpu64, cu)
    dev = [None if t is None else t.cuda() for t in inputs]
    cu_d = None if cu is None else cu.cuda()
    _poison_cuda_allocator()
    fwd = OPS.recurrent_delta_scan_fwd(*dev, cu_d)
    _poison_cuda_allocator()
    bwd = OPS.recurrent_delta_scan_bwd(grad_o.cuda(), grad_final.cuda(), *dev, cu_d)
    torch.cuda.synchronize()
    return _errors(FWD_NAMES[:2], fwd, ref_fwd), _errors(GRAD_NAMES, bwd, ref_bwd)


def conv_inputs(B, T, E, W, dtype, init, N, seed):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    return (randn(B, T, E), randn(E, W, scale=0.5), randn(E, scale=0.5),
            randn(N, E, W - 1) if init else None, randn(B, T, E), randn(N, E, W - 1))


def run_conv_case(case, seed):
    name, dtype, B, T, E, W, init, lengths = case
    cu = None if lengths is None else cu_seqlens_from_lengths(lengths)
    N = B if cu is None else len(lengths)
    x, w, b, s0, grad_y, grad_final = conv_inputs(B, T, E, W, dtype, init, N, seed)
    c64 = [None if t is None else t.double() for t in (x, w, b)]
    s64 = None if s0 is None else s0.double()
    ref_fwd = OPS.causal_conv1d_silu_fwd(*c64, cu, s64)
    ref_bwd = OPS.causal_conv1d_silu_bwd(grad_y.double(), grad_final.double(), *c64, cu, s64)
    xd, wd, bd = x.cuda(), w.cuda(), b.cuda()
    if name == "in_proj":  # x read in place from the model's (B, T, 3E) projection rows
        xd = torch.cat((torch.randn_like(xd), xd, torch.randn_like(xd)), -1)[..., E:2 * E]
    s0d = None if s0 is None else s0.cuda()
    cu_d = None if cu is None else cu.cuda()
    _poison_cuda_allocator()
    fwd = OPS.causal_conv1d_silu_fwd(xd, wd, bd, cu_d, s0d)
    _poison_cuda_allocator()
    bwd = OPS.causal_conv1d_silu_bwd(grad_y.cuda(), grad_final.cuda(), xd, wd, bd, cu_d, s0d)
    torch.cuda.synchronize()
    return _errors(CONV_NAMES, fwd, ref_fwd), _errors(CONV_GRAD_NAMES, bwd, ref_bwd)


def _report(name, dtype, shape, errs, grads, rows):
    fwd_name, fwd_err = max(errs.items(), key=lambda x: x[1])
    grad_name, grad_err = max(grads.items(), key=lambda x: x[1])
    tol = TOLERANCE[dtype]
    ok = fwd_err <= tol and grad_err <= tol
    dt = str(dtype).replace("torch.", "")
    print(f"{name:<10} {dt:<9} {shape:<44} {fwd_err:>9.2e} {fwd_name:<8} {grad_err:>9.2e} "
          f"{grad_name:<10} {tol:>7.0e}  {'PASS' if ok else 'FAIL'}", flush=True)
    rows.append(dict(case=name, dtype=dt, shape=shape, fwd=errs, grads=grads, tol=tol, ok=ok))
    return ok


def run_new_op_tables(rows, ops):
    """The recurrent_delta_scan and causal_conv1d_silu tables (those in ``ops``); returns the
    number of failures."""
    failed = 0
    header = f"{'case':<10} {'dtype':<9} {'shape':<44} {'fwd err':>9} {'worst':<8} {'grad err':>9} {'worst':<10} {'tol':>7}  result"
    print("\nrecurrent_delta_scan (CUDA vs CPU float64)\n" + header)
    for i, case in enumerate(recurrent_cases() if "recurrent" in ops else []):
        name, dtype, B, T, H, D, P, decay, init, lengths = case
        errs, grads = run_recurrent_case(case, seed=100 + i)
        shape = f"B{B} T{T} H{H} D{D} P{P} {decay} init={init:d} varlen={lengths is not None:d}"
        failed += not _report(name, dtype, shape, errs, grads, rows)
    print("\ncausal_conv1d_silu (CUDA vs CPU float64)\n" + header)
    for i, case in enumerate(conv_cases() if "conv" in ops else []):
        name, dtype, B, T, E, W, init, lengths = case
        errs, grads = run_conv_case(case, seed=200 + i)
        shape = f"B{B} T{T} E{E} W{W} init={init:d} varlen={lengths is not None:d}"
        failed += not _report(name, dtype, shape, errs, grads, rows)
    return failed


def check_invalid_cu_seqlens():
    q, k, v, beta, ld, ph, _ = make_inputs(1, 12, 2, 8, 1, dtype=torch.float32)
    dev = [t.cuda() for t in (q, k, v, beta, ld, ph)]
    ok = True
    for bad in ([1, 12], [0, 5, 11], [0, 7, 5, 12]):
        cu = torch.tensor(bad, dtype=torch.int32, device="cuda")
        o, final, _, energy = OPS.chunk_delta_scan_fwd(*dev, None, cu, 8)
        ok &= bool(torch.isnan(o).all() and torch.isnan(final).all() and torch.isnan(energy).all())
        outs = (*OPS.recurrent_delta_scan_fwd(*dev, None, cu),
                *OPS.recurrent_delta_scan_bwd(torch.ones_like(dev[2]), None, *dev, None, cu))
        x, w, b = (torch.randn(1, 12, 16, device="cuda"), torch.randn(16, 4, device="cuda"),
                   torch.randn(16, device="cuda"))
        outs += (*OPS.causal_conv1d_silu_fwd(x, w, b, cu, None),
                 *OPS.causal_conv1d_silu_bwd(torch.ones_like(x), None, x, w, b, cu, None))
        ok &= all(bool(torch.isnan(t).all()) for t in outs if t.numel())
    return ok


def check_decode_graph():
    """One decode step (recurrent scan + conv with state, T = 1, B = 64) captured in a CUDA graph
    and replayed on new inputs equals the eager ops."""
    B, H, D, P, E = 64, 24, 64, 2, 1536
    scan = [t.cuda() for t in make_inputs(B, 1, H, D, P, dtype=torch.bfloat16, initial_state=True)]
    conv = [t.cuda() for t in conv_inputs(B, 1, E, 4, torch.bfloat16, True, B, seed=5)[:4]]
    eager = lambda: (*OPS.recurrent_delta_scan_fwd(*scan, None),  # noqa: E731
                     *OPS.causal_conv1d_silu_fwd(*conv[:3], None, conv[3]))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        eager()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = eager()
    for t in scan + conv:
        t.copy_(torch.randn_like(t.float()).to(t.dtype))
    graph.replay()
    return all(torch.equal(a, b) for a, b in zip(captured, eager()))


def check_opcheck():
    cu = torch.tensor([0, 5, 5, 19], dtype=torch.int32, device="cuda")
    for dtype in (torch.float32, torch.float64):
        for P, init, packed in [(1, False, False), (2, True, False), (2, True, True), (8, False, True)]:
            B, N = (1, 3) if packed else (2, 2)
            args = make_inputs(B, 19, 2, 8, P, dtype=dtype, initial_state=init, n_states=N)
            args = [None if t is None else t.cuda().requires_grad_() for t in args]
            c = cu if packed else None
            torch.library.opcheck(OPS.chunk_delta_scan_fwd.default, (*args, c, 8))
            det = [None if t is None else t.detach() for t in args]
            o, final, boundary, _ = OPS.chunk_delta_scan_fwd(*det, c, 8)
            torch.library.opcheck(OPS.chunk_delta_scan_bwd.default,
                                  (torch.randn_like(o), torch.randn_like(final), *det[:6], boundary, c, 8))
            torch.library.opcheck(OPS.recurrent_delta_scan_fwd.default, (*args, c))
            torch.library.opcheck(OPS.recurrent_delta_scan_bwd.default,
                                  (torch.randn_like(o), torch.randn_like(final), *det, c))
        for init, packed in [(False, False), (True, False), (True, True)]:
            B, N = (1, 3) if packed else (2, 2)
            x, w, b, s0, gy, gf = conv_inputs(B, 19, 6, 4, dtype, init, N, seed=3)
            args = [None if t is None else t.cuda().requires_grad_() for t in (x, w, b)]
            s0 = None if s0 is None else s0.cuda().requires_grad_()
            c = cu if packed else None
            torch.library.opcheck(OPS.causal_conv1d_silu_fwd.default, (*args, c, s0))
            det = [t.detach() for t in args]
            torch.library.opcheck(OPS.causal_conv1d_silu_bwd.default,
                                  (gy.cuda(), gf.cuda(), *det, c, None if s0 is None else s0.detach()))
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--ops", default="chunk,recurrent,conv",
                        help="comma-separated tables to run: chunk, recurrent, conv")
    args = parser.parse_args()
    ops = set(args.ops.split(","))
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    rows, failed = [], 0
    header = f"{'case':<10} {'dtype':<9} {'B':>2} {'T':>6} {'H':>2} {'D':>3} {'P':>2} {'C':>3} {'decay':<8} {'init':<5} {'varlen':<6} {'fwd err':>9} {'worst':<8} {'grad err':>9} {'worst':<10} {'tol':>7}  result"
    print(header)
    for i, case in enumerate(cases() if "chunk" in ops else []):
        name, dtype, B, T, H, D, P, C, decay, init, lengths = case
        errs, grads = run_case(case, seed=i)
        fwd_name, fwd_err = max(errs.items(), key=lambda x: x[1])
        grad_name, grad_err = max(grads.items(), key=lambda x: x[1])
        tol = TOLERANCE[dtype]
        ok = fwd_err <= tol and grad_err <= tol
        failed += not ok
        dt = str(dtype).replace("torch.", "")
        print(f"{name:<10} {dt:<9} {B:>2} {T:>6} {H:>2} {D:>3} {P:>2} {C:>3} {decay:<8} {str(init):<5} "
              f"{str(lengths is not None):<6} {fwd_err:>9.2e} {fwd_name:<8} {grad_err:>9.2e} {grad_name:<10} "
              f"{tol:>7.0e}  {'PASS' if ok else 'FAIL'}", flush=True)
        rows.append(dict(case=name, dtype=dt, B=B, T=T, H=H, D=D, P=P, C=C, decay=decay, init=init,
                         lengths=lengths, fwd=errs, grads=grads, tol=tol, ok=ok))
    failed += run_new_op_tables(rows, ops)
    print()
    for label, fn in (("invalid cu_seqlens -> NaN (all CUDA ops)", check_invalid_cu_seqlens),
                      ("decode step replays from a CUDA graph", check_decode_graph),
                      ("opcheck (CUDA, all ops)", check_opcheck)):
        try:
            ok = fn()
        except Exception as e:  # reported as a failure row, the table goes on
            print(f"{label}: {type(e).__name__}: {str(e)[:300]}")
            ok = False
        failed += not ok
        print(f"{label:<40} {'PASS' if ok else 'FAIL'}", flush=True)
        rows.append(dict(case=label, ok=ok))
    print(f"{failed} failed of {len(rows)}  ({torch.cuda.get_device_name()}, torch {torch.__version__})")
    if args.json:
        write_json(args.json, rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
