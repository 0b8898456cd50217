"""GPU benchmark: CD-SSM block vs Transformer block, and the 12-layer LM training step.

bf16 autocast (fp32 master weights), forward + backward, --tokens tokens per step (B = tokens / L),
d_model 768, for each L in --lengths, all rows in one run:
  block  compiled (fullgraph) CDSSMBlock vs TransformerBlock (RMSNorm + SDPA flash attention +
         SwiGLU): ms, tokens/s, peak memory above the inputs and weights;
  lm     compiled CDSSMForCausalLM and TransformerForCausalLM (12 layers, V 50257) forward +
         backward + fused AdamW step: tokens/s, model FLOP utilisation against the bf16 matmul
         peak measured in the same run (model FLOPs 6·N·tokens, plus 12·n·L·d per token of
         causal attention for the Transformer).
Prints a table with CD-SSM/Transformer ratios and writes JSON.

Example: python tools/bench_gpu.py --json runs/bench_gpu.json
"""

import argparse
import json

import torch

from cuda_timing import cuda_time_ms, matmul_peak_tflops, peak_mib

from cdssm.config import CDSSMConfig
from cdssm.models.attention import plan_attention
from cdssm.models.cdssm import CDSSMBlock, CDSSMForCausalLM
from cdssm.models.transformer import TransformerBlock, TransformerConfig, TransformerForCausalLM
from cdssm.files import write_json

D_MODEL, N_LAYERS, VOCAB = 768, 12, 50257


def block_forward(arch, L, recompute=True):
    """x (B, L, d) ↦ the compiled (fullgraph) block's output, for arch "cdssm" or "transformer";
    recompute: the CD-SSM block's selective recomputation (False keeps every activation)."""
    torch.manual_seed(0)
    if arch == "cdssm":
        block = CDSSMBlock(CDSSMConfig(D_MODEL, N_LAYERS, L, VOCAB), 0).cuda()
        block.selective_recompute = recompute
        return torch.compile(lambda x: block(x).hidden, fullgraph=True)
    block = TransformerBlock(TransformerConfig(D_MODEL, N_LAYERS, L, VOCAB)).cuda()
    plan = plan_attention(L, torch.device("cuda"), 64, 10000.0, torch.bfloat16)
    return torch.compile(lambda x: block(x, plan)[0], fullgraph=True)


def block_forward_bf16(arch, L, B, recompute=True):
    """(forward, grad): forward() runs the compiled block on a fixed x (B, L, d) bf16 under bf16
    autocast; grad is a cotangent for its output."""
    fwd = block_forward(arch, L, recompute)
    x = torch.randn(B, L, D_MODEL, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return fwd(x)

    return forward, torch.randn_like(x)


def block_step(arch, L, B, recompute=True):
    """A compiled fwd+bwd step of one block on x (B, L, d) bf16."""
    forward, grad = block_forward_bf16(arch, L, B, recompute)
    return lambda: forward().backward(grad)


def lm_step(arch, L, B):
    torch.manual_seed(0)
    if arch == "cdssm":
        model = CDSSMForCausalLM(CDSSMConfig(D_MODEL, N_LAYERS, L, VOCAB)).cuda()
    else:
        model = TransformerForCausalLM(TransformerConfig(D_MODEL, N_LAYERS, L, VOCAB)).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    compiled = torch.compile(model, fullgraph=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, VOCAB, (B, L), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    flops_per_token = 6 * n_params + (12 * N_LAYERS * L * D_MODEL // 2 if arch == "transformer" else 0)
    return step, flops_per_token


def add_block_shape_args(p):
    """--length and --tokens, the one-length block tools' shape (profile, memory at peak)."""
    p.add_argument("--length", type=int, default=2048, help="sequence length L")
    p.add_argument("--tokens", type=int, default=32768, help="tokens per step (B = tokens / L)")


def block_shape(p, a) -> tuple:
    """(L, B) of add_block_shape_args' arguments, checked; errors without a CUDA GPU."""
    if a.length < 1 or a.tokens % a.length:
        p.error(f"--length: must divide --tokens {a.tokens}, got {a.length}")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    return a.length, a.tokens // a.length


def guarded(fn):
    try:
        return fn()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--tokens", type=int, default=32768, help="tokens per step (B = tokens / L)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-lm", action="store_true", help="skip the 12-layer LM rows")
    p.add_argument("--no-block", action="store_true",
                   help="skip the block rows (e.g. the LM rows alone at long L, which take about "
                        "a minute of compile each)")
    p.add_argument("--keep-activations", action="store_true",
                   help="CD-SSM blocks keep every activation for the backward (no selective "
                        "recomputation)")
    p.add_argument("--json", default="runs/bench_gpu.json")
    a = p.parse_args(argv)
    if a.no_lm and a.no_block:
        p.error("--no-lm with --no-block leaves nothing to measure")
    for L in a.lengths:
        if L < 1 or a.tokens % L:
            p.error(f"--lengths: each length must divide --tokens {a.tokens}, got {L}")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")

    peak = matmul_peak_tflops()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "matmul_peak_tflops": peak, "tokens_per_step": a.tokens,
              "cdssm_recompute": not a.keep_activations, "block": [], "lm": []}
    for L in a.lengths:
        B = a.tokens // L
        for arch in () if a.no_block else ("cdssm", "transformer"):
            def measure():
                step = block_step(arch, L, B, not a.keep_activations)
                ms = cuda_time_ms(step, a.warmup, a.repeats)
                return {"arch": arch, "L": L, "B": B, "ms": ms, "ktok_per_s": a.tokens / ms,
                        "peak_mib": peak_mib(step)}
            row = guarded(measure) or {"arch": arch, "L": L, "B": B, "oom": True}
            result["block"].append(row)
            print(json.dumps(row), flush=True)
        if not a.no_lm:
            for arch in ("cdssm", "transformer"):
                def measure_lm():
                    step, fpt = lm_step(arch, L, B)
                    ms = cuda_time_ms(step, a.warmup, max(3, a.repeats // 2))
                    return {"arch": arch, "L": L, "B": B, "ms": ms, "ktok_per_s": a.tokens / ms,
                            "mfu": fpt * a.tokens / (ms * 1e-3) / (peak * 1e12),
                            "peak_mib": peak_mib(step)}
                row = guarded(measure_lm) or {"arch": arch, "L": L, "B": B, "oom": True}
                result["lm"].append(row)
                print(json.dumps(row), flush=True)
        torch._dynamo.reset()

    def table(rows, title, extra):
        print(f"\n{title} ({result['device']}, bf16, {a.tokens} tokens/step; measured bf16 matmul peak {peak:.0f} TFLOP/s)")
        print(f"{'L':>6} {'CD-SSM ktok/s':>14} {'Transf. ktok/s':>15} {'ratio':>6} {'CD-SSM MiB':>11} {'Transf. MiB':>12}{extra}")
        for L in a.lengths:
            c = next(r for r in rows if r["L"] == L and r["arch"] == "cdssm")
            t = next(r for r in rows if r["L"] == L and r["arch"] == "transformer")
            fmt = lambda r, k, f: "OOM" if r.get("oom") else format(r[k], f)
            ratio = "-" if c.get("oom") or t.get("oom") else f"{c['ktok_per_s'] / t['ktok_per_s']:.2f}"
            mfu = "" if not extra else f" {fmt(c, 'mfu', '.3f'):>9} {fmt(t, 'mfu', '.3f'):>9}"
            print(f"{L:>6} {fmt(c, 'ktok_per_s', '.0f'):>14} {fmt(t, 'ktok_per_s', '.0f'):>15} {ratio:>6} "
                  f"{fmt(c, 'peak_mib', '.0f'):>11} {fmt(t, 'peak_mib', '.0f'):>12}{mfu}")

    if result["block"]:
        table(result["block"], "block fwd+bwd, compiled", "")
    if result["lm"]:
        table(result["lm"], f"{N_LAYERS}-layer LM training step", "  MFU(CD)   MFU(Tf)")
    write_json(a.json, result)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
