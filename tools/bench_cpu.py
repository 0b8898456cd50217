"""CPU benchmark: the chunk-scan kernel vs the pure-PyTorch references, and a CD-SSM LM training step.

Prints a table and writes JSON. Rows:
  scan  — chunk_delta_scan (C++ kernel), chunk_delta_scan_reference (PyTorch ops, autograd),
          recurrent_delta_scan_reference (sequential PyTorch loop), forward and forward+backward,
          for each state-pair count P;
  lm    — CDSSMForCausalLM training step (forward + backward), eager vs torch.compile, tokens/s.

Example: python tools/bench_cpu.py --pairs 1 4 8 --json runs/bench_cpu.json
"""

import argparse
import platform
import statistics
import time

import torch

from cdssm.ops import chunk_delta_scan, chunk_delta_scan_reference, recurrent_delta_scan_reference
from cdssm.files import write_json


def _time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _scan_inputs(T, H, D, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(1, T, H, D, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(1, T, H, D, generator=g), dim=-1)
    v = torch.randn(1, T, H, P, 2, generator=g)
    beta = torch.rand(1, T, H, generator=g)
    log_decay = -torch.rand(1, T, H, P, generator=g) * 0.1
    phase = torch.rand(1, T, H, P, generator=g)
    return [t.requires_grad_() for t in (q, k, v, beta, log_decay, phase)]


def _fwd_and_step(scan, args):
    def fwd():
        with torch.no_grad():
            scan(*args)

    def step():
        o = scan(*args)[0]
        torch.autograd.grad(o.square().sum(), args)

    return fwd, step


def bench_scan(T, H, D, pairs, repeats, sequential):
    impls = {
        "kernel": lambda *a: chunk_delta_scan(*a, chunk_size=64),
        "torch_chunk": lambda *a: chunk_delta_scan_reference(*a, chunk_size=64),
    }
    if sequential:
        impls["torch_sequential"] = recurrent_delta_scan_reference
    rows = []
    for P in pairs:
        args = _scan_inputs(T, H, D, P)
        for name, scan in impls.items():
            fwd, step = _fwd_and_step(scan, args)
            reps = 1 if name == "torch_sequential" else repeats
            rows.append({"P": P, "impl": name, "fwd_ms": _time(fwd, reps, warmup=0 if reps == 1 else 1),
                         "fwd_bwd_ms": _time(step, reps, warmup=0 if reps == 1 else 1)})
    return rows


def bench_lm(d_model, n_layers, seq_len, batch, vocab, pairs, repeats):
    from cdssm.config import CDSSMConfig
    from cdssm.models.cdssm import CDSSMForCausalLM

    rows = []
    for P in pairs:
        torch.manual_seed(0)
        model = CDSSMForCausalLM(CDSSMConfig(d_model, n_layers, seq_len, vocab, state_pairs=P))
        ids = torch.randint(0, vocab, (batch, seq_len))

        def step(m):
            def run():
                model.zero_grad(set_to_none=True)
                m(ids, labels=ids).loss.backward()
            return run

        for mode, m in (("eager", model), ("compiled", torch.compile(model, fullgraph=True))):
            ms = _time(step(m), repeats, warmup=2)
            rows.append({"P": P, "mode": mode, "step_ms": ms, "tokens_per_s": batch * seq_len / ms * 1e3})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=4096, help="scan sequence length (default 4096)")
    p.add_argument("--H", type=int, default=8, help="scan heads (default 8)")
    p.add_argument("--D", type=int, default=64, help="scan head dim (default 64)")
    p.add_argument("--pairs", type=int, nargs="+", default=[1, 4, 8], help="state pairs P to run")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (median reported)")
    p.add_argument("--no-sequential", action="store_true", help="skip the slow sequential reference")
    p.add_argument("--lm-d-model", type=int, default=256)
    p.add_argument("--lm-layers", type=int, default=4)
    p.add_argument("--lm-seq-len", type=int, default=512)
    p.add_argument("--lm-batch", type=int, default=4)
    p.add_argument("--lm-vocab", type=int, default=50257)
    p.add_argument("--no-lm", action="store_true", help="skip the LM training-step rows")
    p.add_argument("--json", default="runs/bench_cpu.json", help="where to write the results")
    a = p.parse_args(argv)
    for name in ("T", "H", "D", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")

    result = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__,
              "scan": {"B": 1, "T": a.T, "H": a.H, "D": a.D, "dtype": "float32",
                       "rows": bench_scan(a.T, a.H, a.D, a.pairs, a.repeats, not a.no_sequential)}}
    print(f"chunk scan, B=1 T={a.T} H={a.H} D={a.D} fp32, {torch.get_num_threads()} threads (ms, median)")
    print(f"{'P':>3} {'impl':<18} {'fwd':>10} {'fwd+bwd':>10}")
    for r in result["scan"]["rows"]:
        print(f"{r['P']:>3} {r['impl']:<18} {r['fwd_ms']:>10.1f} {r['fwd_bwd_ms']:>10.1f}")
    if not a.no_lm:
        rows = bench_lm(a.lm_d_model, a.lm_layers, a.lm_seq_len, a.lm_batch, a.lm_vocab, a.pairs, a.repeats)
        result["lm"] = {"d_model": a.lm_d_model, "n_layers": a.lm_layers, "seq_len": a.lm_seq_len,
                        "batch": a.lm_batch, "vocab": a.lm_vocab, "rows": rows}
        print(f"\nCD-SSM LM training step, d={a.lm_d_model} n={a.lm_layers} B={a.lm_batch} L={a.lm_seq_len}")
        print(f"{'P':>3} {'mode':<10} {'step ms':>10} {'tok/s':>10}")
        for r in rows:
            print(f"{r['P']:>3} {r['mode']:<10} {r['step_ms']:>10.1f} {r['tokens_per_s']:>10.0f}")
    write_json(a.json, result)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
