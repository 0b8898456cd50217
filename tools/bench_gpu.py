"""GPU benchmark: CD-SSM block vs Transformer block, and the 12-layer LM training step.

bf16 autocast (fp32 master weights), forward + backward, --tokens tokens per step (B = tokens / L),
d_model 768, for each L in --lengths, all rows in one run:
  block  compiled (fullgraph) CDSSMBlock vs TransformerBlock (RMSNorm + SDPA flash attention +
         SwiGLU): ms, tokens/s, peak memory above the inputs and weights;
  lm     compiled CDSSMForCausalLM and TransformerForCausalLM (12 layers, V 50257) forward +
         backward + fused AdamW step: tokens/s, model FLOP utilisation against the bf16 matmul
         peak measured in the same run (model FLOPs 6·N·tokens, plus 12·n·L·d per token of
         causal attention for the Transformer).
Block rows carry their fraction of the roofline (tools/roofline.py: model FLOPs at the measured
bf16 peak, plus for CD-SSM the scan's bytes at the device-to-device copy rate measured in the
same run), the table's roof columns. Prints a table with CD-SSM/Transformer ratios and writes JSON.
With --peers, a third block per L, measured the same way in the same run: "gdn", fla's Gated
DeltaNet block (tools/peers.py: TransformerBlock with flash-linear-attention's GatedDeltaNet layer
for attention), compiled with graph breaks at fla's kernels where torch.compile takes it, eager
where not (the row's "mode" says which); the block table then adds GDN ktok/s, the
CD-SSM/GDN ratio and GDN MiB.

Example: python tools/bench_gpu.py --json runs/bench_gpu.json
"""

import argparse
import json

import torch

import peers
from cuda_timing import copy_bandwidth_gbs, cuda_time_ms, matmul_peak_tflops, peak_mib
from roofline import model_flops, roofline_ms, scan_floor_bytes

from cdssm.config import CDSSMConfig
from cdssm.models.attention import plan_attention
from cdssm.models.cdssm import CDSSMBlock, CDSSMForCausalLM
from cdssm.models.transformer import TransformerBlock, TransformerConfig, TransformerForCausalLM
from cdssm.files import write_json

D_MODEL, N_LAYERS, VOCAB = 768, 12, 50257


def block_module(arch, L):
    """The block of arch "cdssm", "transformer" or "gdn" (peers.GatedDeltaNetBlock) for sequence
    length L, on the current default device."""
    if arch == "cdssm":
        return CDSSMBlock(CDSSMConfig(D_MODEL, N_LAYERS, L, VOCAB), 0)
    config = TransformerConfig(D_MODEL, N_LAYERS, L, VOCAB)
    return peers.GatedDeltaNetBlock(config) if arch == "gdn" else TransformerBlock(config)


def block_forward(arch, L, recompute=True, compiled=True):
    """x (B, L, d) ↦ the block's output (block_module); compiled: fullgraph for ours, with graph
    breaks for gdn (fla's scan is torch.compiler.disable'd); eager with compiled=False.
    recompute: the CD-SSM block's selective recomputation (False keeps every activation)."""
    torch.manual_seed(0)
    block = block_module(arch, L).cuda()
    if arch == "cdssm":
        block.selective_recompute = recompute
        fn = lambda x: block(x).hidden
    elif arch == "gdn":
        fn = block
    else:
        plan = plan_attention(L, torch.device("cuda"), 64, 10000.0, torch.bfloat16)
        fn = lambda x: block(x, plan)[0]
    return torch.compile(fn, fullgraph=arch != "gdn") if compiled else fn


def block_forward_bf16(arch, L, B, recompute=True, compiled=True):
    """(forward, grad): forward() runs the block (block_forward) on a fixed x (B, L, d) bf16
    under bf16 autocast; grad is a cotangent for its output."""
    fwd = block_forward(arch, L, recompute, compiled)
    x = torch.randn(B, L, D_MODEL, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return fwd(x)

    return forward, torch.randn_like(x)


def block_step(arch, L, B, recompute=True, compiled=True):
    """A fwd+bwd step of one block (block_forward) on x (B, L, d) bf16."""
    forward, grad = block_forward_bf16(arch, L, B, recompute, compiled)
    return lambda: forward().backward(grad)


def block_roofline_ms(arch, L, tokens, peak_tflops, bandwidth_gbs):
    """The roofline of arch's block step (tools/roofline.py): its model FLOPs at peak_tflops, plus
    for CD-SSM its scan's bytes at bandwidth_gbs; None for the peer (its scan's floor is fla's)."""
    if arch not in ("cdssm", "transformer"):
        return None
    with torch.device("meta"):  # counted, not allocated
        block = block_module(arch, L)
    config = CDSSMConfig(D_MODEL, N_LAYERS, L, VOCAB)
    nbytes = scan_floor_bytes(tokens, config.n_heads, config.head_dim, config.state_pairs) if arch == "cdssm" else 0
    flops = model_flops(arch, sum(p.numel() for p in block.parameters()), L, D_MODEL, tokens)
    return roofline_ms(flops=flops, peak_tflops=peak_tflops, nbytes=nbytes, bandwidth_gbs=bandwidth_gbs)


# A table's optional pair of fraction columns: the rows' key -> (CD-SSM heading, Transformer heading)
FRACTIONS = {"mfu": ("MFU(CD)", "MFU(Tf)"), "roofline_fraction": ("roof(CD)", "roof(Tf)")}


def table_lines(rows, lengths, fraction=None):
    """The table under a title: per L in lengths, CD-SSM and Transformer ktok/s, their ratio
    (CD-SSM / Transformer throughput) and peak MiB of rows (dicts of one run; "oom" rows show
    OOM); with fraction (a key of FRACTIONS), both rows' value of it (MFU, or the fraction of the
    roofline); when rows hold "gdn" rows, GDN ktok/s, CD-SSM / GDN throughput and GDN MiB too,
    and after the table how each GDN row ran (its "mode")."""
    gdn = any(r["arch"] == "gdn" for r in rows)
    fmt = lambda r, k, f: "OOM" if r.get("oom") else format(r[k], f)
    ratio = lambda a, b: "-" if a.get("oom") or b.get("oom") else f"{a['ktok_per_s'] / b['ktok_per_s']:.2f}"
    lines = [f"{'L':>6} {'CD-SSM ktok/s':>14} {'Transf. ktok/s':>15} {'ratio':>6} {'CD-SSM MiB':>11} "
             f"{'Transf. MiB':>12}" + ("".join(f" {h:>9}" for h in FRACTIONS[fraction]) if fraction else "")
             + (f" {'GDN ktok/s':>11} {'CD/GDN':>7} {'GDN MiB':>8}" if gdn else "")]
    for L in lengths:
        c, t, g = (next((r for r in rows if r["L"] == L and r["arch"] == arch), None)
                   for arch in ("cdssm", "transformer", "gdn"))
        line = (f"{L:>6} {fmt(c, 'ktok_per_s', '.0f'):>14} {fmt(t, 'ktok_per_s', '.0f'):>15} "
                f"{ratio(c, t):>6} {fmt(c, 'peak_mib', '.0f'):>11} {fmt(t, 'peak_mib', '.0f'):>12}")
        if fraction:
            line += f" {fmt(c, fraction, '.3f'):>9} {fmt(t, fraction, '.3f'):>9}"
        if gdn:
            line += f" {fmt(g, 'ktok_per_s', '.0f'):>11} {ratio(c, g):>7} {fmt(g, 'peak_mib', '.0f'):>8}"
        lines.append(line)
    return lines + [f"GDN block at L {r['L']}: {r['mode']}" for r in rows if "mode" in r]


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

    flops_per_token = model_flops(arch, n_params, L, D_MODEL, 1, N_LAYERS)
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
    p.add_argument("--peers", action="store_true",
                   help="also measure fla's Gated DeltaNet block (arch gdn) at each L in this run "
                        "(needs flash-linear-attention 0.6.0: tools/fetch_peer_wheels.sh)")
    p.add_argument("--json", default="runs/bench_gpu.json")
    a = p.parse_args(argv)
    if a.no_lm and a.no_block:
        p.error("--no-lm with --no-block leaves nothing to measure")
    for L in a.lengths:
        if L < 1 or a.tokens % L:
            p.error(f"--lengths: each length must divide --tokens {a.tokens}, got {L}")
    if a.peers and a.no_block:
        p.error("--peers: the peer is a block row, and --no-block drops the block rows")
    if a.peers:
        peers.require_fla(p, "fla.layers")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")

    peak, bandwidth = matmul_peak_tflops(), copy_bandwidth_gbs()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "matmul_peak_tflops": peak, "copy_bandwidth_gbs": bandwidth, "tokens_per_step": a.tokens,
              "cdssm_recompute": not a.keep_activations, "block": [], "lm": []}
    note = peers.lift_triton_guard() if a.peers else None
    if note:
        result["fla_note"] = note
    for L in a.lengths:
        B = a.tokens // L
        for arch in () if a.no_block else ("cdssm", "transformer") + (("gdn",) if a.peers else ()):
            def measure():
                make_step = lambda compiled: block_step(arch, L, B, not a.keep_activations, compiled)
                step, mode = peers.compiled_or_eager(make_step) if arch == "gdn" else (make_step(True), None)
                ms = cuda_time_ms(step, a.warmup, a.repeats)
                row = {"arch": arch, "L": L, "B": B, "ms": ms, "ktok_per_s": a.tokens / ms,
                       "peak_mib": peak_mib(step)}
                roof = block_roofline_ms(arch, L, a.tokens, peak, bandwidth)
                if roof is not None:
                    row.update(roofline_ms=roof, roofline_fraction=roof / ms)
                return row if mode is None else {**row, "mode": mode}
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

    def table(rows, title, fraction):
        print(f"\n{title} ({result['device']}, bf16, {a.tokens} tokens/step; measured bf16 matmul peak "
              f"{peak:.0f} TFLOP/s, copy {bandwidth:.0f} GB/s)")
        print("\n".join(table_lines(rows, a.lengths, fraction)))

    if result["block"]:
        table(result["block"], "block fwd+bwd, compiled", "roofline_fraction")
        if note:
            print(f"GDN block: {note}")
    if result["lm"]:
        table(result["lm"], f"{N_LAYERS}-layer LM training step", "mfu")
    write_json(a.json, result)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
