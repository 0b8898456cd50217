"""float8 training (torchao, dynamic tensorwise scaling) vs bf16 autocast on one GPU, in one run.

For each --arch, at --d-model (default 2048), --n-layers, --seq-len and --batch-size:
  linears  the linear layers of one block that ``cdssm train --float8`` converts
           (``cdssm.training.precision.float8_eligible``), each on its own (tokens, K) bf16
           input, all in one compiled forward + backward: bf16 autocast (fp32 weights) vs the
           same layers converted by torchao;
  lm       the whole training step: embedding, n blocks (each compiled with fullgraph=True:
           identical blocks share one compilation), final norm, chunked cross-entropy (eager,
           the same in both), backward and fused AdamW: bf16 autocast vs float8 through
           ``cdssm.training.precision.convert_to_float8`` (what ``--float8`` does).
Times are medians of per-step device time (CUDA events) after warm-up. Prints a table with the
float8 speedups and writes JSON. The CD-SSM rows depend on the scan kernel of this tree.

Example: python tools/bench_float8.py --json runs/bench_float8.json
"""

import argparse
import copy
import json

import torch
from torch import nn

from cuda_timing import cuda_time_ms, gpu_lock, matmul_peak_tflops

from cdssm.models.registry import ARCHITECTURES
from cdssm.training.precision import convert_to_float8, float8_eligible
from cdssm.files import write_json

VOCAB = 50257
DEVICE = "cuda"  # a CPU dry run of the code paths sets "cpu"


def build(arch, d_model, n_layers, seq_len):
    torch.manual_seed(0)
    cls = ARCHITECTURES[arch]
    return cls(cls.config_class(d_model, n_layers, seq_len, VOCAB)).to(DEVICE)


class LinearStack(nn.Module):
    """Independent linear layers: forward(xs) = [layer_i(x_i)]."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, xs):
        return [layer(x) for layer, x in zip(self.layers, xs)]


def linears_step(model, tokens, float8):
    """fwd+bwd of block 0's float8-eligible linears, and their model FLOPs per step."""
    tied = model.lm_head.weight
    layers = [copy.deepcopy(m) for m in model.blocks[0].modules() if float8_eligible(m, tied)]
    stack = LinearStack(layers)
    if float8:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(stack)
    compiled = torch.compile(stack, fullgraph=True)
    xs = [torch.randn(tokens, m.in_features, device=DEVICE, dtype=torch.bfloat16,
                      requires_grad=True) for m in layers]
    grads = [torch.randn(tokens, m.out_features, device=DEVICE, dtype=torch.bfloat16)
             for m in layers]

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            outs = compiled(xs)
        torch.autograd.backward(outs, grads)
        for t in [*xs, *stack.parameters()]:
            t.grad = None

    shapes = [(m.in_features, m.out_features) for m in layers]
    return step, 6 * tokens * sum(k * n for k, n in shapes), shapes


def lm_step(model, batch_size, seq_len, float8):
    if float8:
        convert_to_float8(model)
    for block in model.blocks:
        block.compile(fullgraph=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, VOCAB, (batch_size, seq_len), device=DEVICE)

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure(step, warmup, repeats, lock):
    """Compiles (the first call, outside the lock), then times under the lock."""
    step()
    with gpu_lock(lock):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ms = cuda_time_ms(step, warmup, repeats)
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
    return ms, peak


def top_kernels(step, steps: int = 2, top: int = 15) -> list:
    """[(device ms per step, calls per step, kernel name)] of the ``top`` costliest kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    return [(e.device_time_total / 1e3 / steps, e.count // steps, e.key[:90])
            for e in events[:top]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", choices=sorted(ARCHITECTURES),
                   default=["transformer", "cdssm"])
    p.add_argument("--d-model", type=int, default=2048)
    p.add_argument("--n-layers", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--parts", nargs="+", choices=("linears", "lm"), default=["linears", "lm"])
    p.add_argument("--profile", action="store_true",
                   help="also list the costliest kernels of each lm step (torch.profiler)")
    p.add_argument("--lock", help="GPU lock file shared with concurrent benchmarks")
    p.add_argument("--json", default="runs/bench_float8.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    import torchao

    tokens = a.batch_size * a.seq_len
    with gpu_lock(a.lock):
        peak = matmul_peak_tflops()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "torchao": torchao.__version__, "matmul_peak_tflops": peak, "d_model": a.d_model,
              "n_layers": a.n_layers, "seq_len": a.seq_len, "tokens_per_step": tokens,
              "rows": []}
    for arch in a.archs:
        for part in a.parts:
            row = {"arch": arch, "part": part}
            for float8 in (False, True):
                name = "float8" if float8 else "bf16"
                model = build(arch, a.d_model, a.n_layers, a.seq_len)
                try:
                    if part == "linears":
                        step, flops, shapes = linears_step(model, tokens, float8)
                        del model
                        row["shapes"] = shapes
                    else:
                        step, flops = lm_step(model, a.batch_size, a.seq_len, float8), None
                    ms, mem = measure(step, a.warmup, a.repeats, a.lock)
                    row[name] = {"ms": ms, "peak_gib": mem, "ktok_per_s": tokens / ms}
                    if a.profile and part == "lm":
                        with gpu_lock(a.lock):
                            row[name]["kernels"] = top_kernels(step)
                        print(f"{arch} {name}: costliest kernels, ms per step of {ms:.1f}")
                        for k_ms, calls, kernel in row[name]["kernels"]:
                            print(f"  {k_ms:8.2f} {calls:5d}  {kernel}")
                    if flops:
                        row[name]["tflops"] = flops / ms / 1e9
                except torch.OutOfMemoryError:
                    row[name] = {"oom": True}
                step = model = None
                torch.cuda.empty_cache()
                torch._dynamo.reset()
            if "ms" in row["bf16"] and "ms" in row["float8"]:
                row["speedup"] = row["bf16"]["ms"] / row["float8"]["ms"]
            result["rows"].append(row)
            print(json.dumps(row), flush=True)

    print(f"\nfloat8 vs bf16 ({result['device']}, torch {torch.__version__}, torchao "
          f"{torchao.__version__}; d_model {a.d_model}, {a.n_layers} layers, {tokens} tokens/step "
          f"of {a.seq_len}; measured bf16 matmul {peak:.0f} TFLOP/s)")
    print(f"{'arch':<12} {'part':<8} {'bf16 ms':>9} {'float8 ms':>10} {'speedup':>8} "
          f"{'bf16 GiB':>9} {'fp8 GiB':>8}")
    for row in result["rows"]:
        b, f = row["bf16"], row["float8"]
        cell = lambda r, k, fmt: "OOM" if r.get("oom") else format(r[k], fmt)
        print(f"{row['arch']:<12} {row['part']:<8} {cell(b, 'ms', '.2f'):>9} "
              f"{cell(f, 'ms', '.2f'):>10} {row.get('speedup', float('nan')):>7.2f}x "
              f"{cell(b, 'peak_gib', '.1f'):>9} {cell(f, 'peak_gib', '.1f'):>8}")
    write_json(a.json, result)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
