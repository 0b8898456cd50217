"""GPU decode benchmark: per-token latency and tokens/s of the CD-SSM vs the Transformer.

gpt2-small-sized models (d 768, 12 layers, V 50257, random init), bf16 weights for both, one
decode step = one new token for each of B sequences after a context of L tokens, for every L in
--contexts and B in --batches. CUDA-event timing: --warmup untimed steps, then the median over
--repeats of --steps consecutive steps, per step.

CD-SSM: the state is produced by real prefill of L random tokens (packed in calls of at most
--prefill-tokens tokens, the state carried between calls; logits of the last position only); the
step's cost does not depend on L. Variants, timed in this order (the compiling ones last):
  eager          model(tokens, state) in Python
  cudagraph      cdssm.inference.cuda_graph.CUDAGraphStep: the eager step captured once
  compiled       torch.compile(model, fullgraph=True) (Inductor kernels, Python dispatch)
  compiled+graph the compiled step captured the same way
  aoti           the decode.pt2 of cdssm.inference.export (AOTInductor, bf16, CUDA)
Transformer: a KV cache of L positions filled with random keys and values (its step costs the
same whatever they hold); B is the largest of B, B/2, ... whose cache fits (else OOM). Variants:
  eager          the model's own forward with its KVCache (functional: every step copies the
                 cache into a new one with one more slot, as the model implements it)
  static         a preallocated cache of L + steps slots written in place, SDPA over it with
                 a mask of the filled slots (this tool's ``StaticKVDecode``)
  flash          the same cache (B, S, H, D), FlashAttention-2 varlen reading the filled slots
  static+graph, flash+graph   those steps captured into a CUDA graph
Both static steps are checked against the model's own KV-cache decode at start.
Prefill tokens/s at L = --prefill-context, B = 1: the CD-SSM's prefill (with state) and the
Transformer's forward (flash causal attention), logits of the last position only.

Prints a table and the CD-SSM / Transformer tokens/s ratios at each context (each at the
largest batch it fits); writes JSON (rewritten after every row, so a cut-off run keeps its rows).

Example: python tools/bench_decode.py --json runs/bench_decode.json
"""

import argparse
import json
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from cdssm.config import CDSSMConfig
from cdssm.inference.cuda_graph import CUDAGraphStep
from cdssm.inference.export import export_programs
from cdssm.inference.programs import DecodeProgram
from cdssm.models.cdssm import CDSSMForCausalLM
from cdssm.models.rotary import apply_rotary, rotary_tables
from cdssm.models.transformer import TransformerConfig, TransformerForCausalLM
from cdssm.files import write_json
from cuda_timing import cuda_time_ms

D_MODEL, N_LAYERS, VOCAB = 768, 12, 50257
DTYPE = torch.bfloat16
DEVICE = "cuda"


def timed_once_ms(fn):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    end.synchronize()
    return out, start.elapsed_time(end)


class Recurrent:
    """A decode loop over a functional step: each call advances ``state`` by one token."""

    def __init__(self, fn, tokens, state):
        self.fn, self.tokens, self.state = fn, tokens, state

    @torch.no_grad()
    def __call__(self):
        out = self.fn(self.tokens, self.state)
        self.state = out[1]
        return out[0]


@torch.no_grad()
def cdssm_prefill(model, L: int, B: int, max_tokens: int):
    """(the state after L random tokens for each of B sequences, the prefill time in ms)."""
    chunk = max(64, min(L, max_tokens // B) // 64 * 64)
    ids = torch.randint(0, VOCAB, (B, L), device=DEVICE)

    def run():
        state = model.init_state(B)
        for s in range(0, L, chunk):
            piece = ids[:, s:s + chunk]
            last = torch.tensor([piece.shape[1] - 1], device=DEVICE)
            state = model(piece, state=state, logit_positions=last).state
        return state

    return timed_once_ms(run)


class StaticKVDecode:
    """The Transformer's decode step over a preallocated KV cache written in place.

    k, v: (n_layers, B, H, S, D) with S = capacity; pos (B,) int64: the next slot. One call
    embeds tokens (B,), per layer writes the new key/value at ``pos`` and attends over the slots
    ≤ pos (SDPA with a bool mask), then advances ``pos``: the same math as the model's KV-cache
    decode with a static layout, so it can be captured in a CUDA graph.
    """

    def __init__(self, model, k, v, filled: int):
        self.model, self.k, self.v = model, k, v
        B = k.shape[1]
        self.tokens = torch.zeros(B, dtype=torch.int64, device=k.device)
        self.pos = torch.full((B,), filled, dtype=torch.int64, device=k.device)
        self.rows = torch.arange(B, device=k.device)
        self.slots = torch.arange(self.capacity, device=k.device)

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def attend(self, i: int, q, k, v):
        """Writes layer i's new k, v (B, H, 1, D) at ``pos``; y (B, H, 1, D) over slots ≤ pos."""
        self.k[i][self.rows, :, self.pos] = k[:, :, 0]
        self.v[i][self.rows, :, self.pos] = v[:, :, 0]
        mask = (self.slots <= self.pos[:, None])[:, None, None, :]  # (B, 1, 1, S)
        return F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask)

    @torch.no_grad()
    def __call__(self):
        m, c = self.model, self.model.config
        B, H, D = self.tokens.shape[0], c.n_heads, c.head_dim
        cos, sin = rotary_tables(self.pos[:, None], D, c.rope_base, torch.float32)
        x = m.embed(self.tokens[:, None])
        for i, block in enumerate(m.blocks):
            q, k, v = block.attn.qkv(block.attn_norm(x)).view(B, 1, 3, H, D).permute(2, 0, 3, 1, 4)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            y = self.attend(i, q, k, v)
            x = x + block.attn.out(y.transpose(1, 2).reshape(B, 1, H * D))
            x = x + block.mlp(block.mlp_norm(x))
        self.pos += 1
        return m.lm_head(m.norm(x))[:, -1]


class FlashKVDecode(StaticKVDecode):
    """``StaticKVDecode`` with k, v (n_layers, B, S, H, D) and FlashAttention-2's varlen kernel
    (``aten._flash_attention_forward`` with ``seqused_k`` = pos + 1): it reads only the filled
    slots of each sequence, with no mask, and stays capturable (CUDA only)."""

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def attend(self, i: int, q, k, v):
        B, H, _, D = q.shape
        S = self.capacity
        self.k[i][self.rows, self.pos] = k[:, :, 0]
        self.v[i][self.rows, self.pos] = v[:, :, 0]
        cu_q = torch.arange(B + 1, dtype=torch.int32, device=q.device)
        y = torch.ops.aten._flash_attention_forward(
            q.reshape(B, H, D), self.k[i].view(B * S, H, D), self.v[i].view(B * S, H, D),
            cu_q, cu_q * S, 1, S, 0.0, False, False, seqused_k=(self.pos + 1).to(torch.int32))[0]
        return y.view(B, H, 1, D)


class GraphedStatic:
    """A StaticKVDecode replayed from one CUDA graph."""

    def __init__(self, step):
        self.step = step
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        step.pos -= 1  # undo the warm-up's advance (capturing runs nothing)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = step()

    def __call__(self):
        self.graph.replay()
        return self.logits


@torch.no_grad()
def check_static_kv(model, flash: bool) -> float:
    """Max |logits| difference of StaticKVDecode (or FlashKVDecode) vs the model's own KV-cache
    decode, one step after 37 tokens, B = 2."""
    B, L = 2, 37
    ids = torch.randint(0, VOCAB, (B, L + 1), device=DEVICE)
    out = model(ids[:, :L], state=model.init_state(B))
    ref = model(ids[:, L:], state=out.state).logits[:, -1].float()
    n, _, H, _, D = out.state.k.shape
    k = torch.zeros(n, B, H, L + 4, D, device=DEVICE, dtype=DTYPE)
    v = torch.zeros_like(k)
    k[:, :, :, :L], v[:, :, :, :L] = out.state.k, out.state.v
    if flash:
        k, v = k.transpose(2, 3).contiguous(), v.transpose(2, 3).contiguous()
    step = (FlashKVDecode if flash else StaticKVDecode)(model, k, v, L)
    step.tokens.copy_(ids[:, L])
    return (step().float() - ref).abs().max().item()


def aoti_decode(model):
    """The loaded AOTInductor package of ``model``'s decode program (cdssm.inference.export)."""
    program = export_programs(model)["decode"]
    path = os.path.join(tempfile.mkdtemp(), "decode.pt2")
    torch._inductor.aoti_compile_and_package(program, package_path=path)
    return torch._inductor.aoti_load_package(path)


def cdssm_row(variant, steps, model, compiled, state, tokens, reference, key, a) -> dict:
    """Times one CD-SSM decode variant from ``state``; the first variant's logits for ``key``
    are the reference of the others'."""
    B = tokens.shape[0]
    start = time.perf_counter()
    with torch.no_grad():
        if variant in ("cudagraph", "compiled+graph"):
            graph = CUDAGraphStep(model if variant == "cudagraph" else compiled, state)
            logits = graph(tokens).float()
            graph.load(state)
            fn = graph.graph.replay
        else:
            logits = steps[variant](tokens, state)[0].float()
            fn = Recurrent(steps[variant], tokens, state)
    setup_s = time.perf_counter() - start  # compile, capture, first step
    diff = (logits - reference.setdefault(key, logits)).abs().max().item()
    ms = cuda_time_ms(fn, a.warmup, a.repeats, inner=a.steps)
    return {"ms": ms, "tok_per_s": B / ms * 1e3, "setup_s": setup_s,
            "max_abs_logit_diff_vs_first_variant": diff}


def transformer_row(model, variant: str, L: int, B: int, a) -> dict:
    """Times one Transformer decode variant with a cache of L random positions for B sequences."""
    from cdssm.models.attention import KVCache

    c = model.config
    extra = 0 if variant == "eager" else a.warmup + a.steps * a.repeats + 2
    shape = (c.n_layers, B, c.n_heads, L + extra, c.head_dim)
    if variant.startswith("flash"):
        shape = (c.n_layers, B, L + extra, c.n_heads, c.head_dim)
    k = torch.randn(shape, device=DEVICE, dtype=DTYPE)
    v = torch.randn(shape, device=DEVICE, dtype=DTYPE)
    steps = a.steps
    if variant == "eager":  # the model's cache grows by a copy per step: fewer steps
        valid = torch.ones(B, L, dtype=torch.bool, device=DEVICE)
        fn = Recurrent(DecodeProgram(model), torch.randint(0, VOCAB, (B,), device=DEVICE),
                       KVCache(k, v, valid))
        steps = max(2, a.steps // 4)
    else:
        fn = (FlashKVDecode if variant.startswith("flash") else StaticKVDecode)(model, k, v, L)
        if variant.endswith("+graph"):
            fn = GraphedStatic(fn)
    ms = cuda_time_ms(fn, 1, a.repeats, inner=steps)
    return {"arch": "transformer", "variant": variant, "L": L, "B": B, "ms": ms,
            "tok_per_s": B / ms * 1e3}


def guarded(fn):
    """fn(), or None when it ran out of memory, or {"error": ...} when it failed otherwise."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        return None
    except Exception as error:  # a variant that fails is reported, the others still run
        return {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    finally:
        torch.cuda.empty_cache()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 32768, 131072])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--steps", type=int, default=20, help="decode steps per timed repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prefill-tokens", type=int, default=262144,
                   help="at most this many tokens per CD-SSM prefill call")
    p.add_argument("--prefill-context", type=int, default=32768)
    p.add_argument("--variants", nargs="+",
                   default=["eager", "cudagraph", "compiled", "compiled+graph", "aoti"],
                   help="CD-SSM variants, timed in this order (compiling ones last)")
    p.add_argument("--transformer-variants", nargs="*",
                   default=["eager", "static", "static+graph", "flash", "flash+graph"])
    p.add_argument("--json", default="runs/bench_decode.json")
    a = p.parse_args(argv)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    torch.manual_seed(0)
    result = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, "torch": torch.__version__,
              "cuda": torch.version.cuda, "dtype": "bfloat16", "d_model": D_MODEL,
              "n_layers": N_LAYERS, "vocab": VOCAB, "steps": a.steps, "repeats": a.repeats,
              "rows": [], "prefill": [], "checks": {}, "setup_s": {}}

    def save():
        write_json(a.json, result)

    def add(row):
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()

    def prefill_at_context(arch, run):
        with torch.no_grad():
            run()
            _, ms = timed_once_ms(run)
        result["prefill_at_context"][arch] = {"L": a.prefill_context, "ms": ms,
                                              "tok_per_s": a.prefill_context / ms * 1e3}
        save()

    result["prefill_at_context"] = {}
    ids = torch.randint(0, VOCAB, (1, a.prefill_context), device=DEVICE)
    last = torch.tensor([a.prefill_context - 1], device=DEVICE)

    # ---- Transformer (first: no compilation) -------------------------------------------------
    tf = TransformerForCausalLM(TransformerConfig(D_MODEL, N_LAYERS, 2048, VOCAB))
    tf = tf.to(device=DEVICE, dtype=DTYPE).eval()
    for flash in (False, True):
        name = f"{'flash' if flash else 'static'}_kv_vs_model_max_abs_logit_diff"
        try:
            result["checks"][name] = check_static_kv(tf, flash)
        except RuntimeError as error:  # e.g. no flash kernel for this device
            result["checks"][name] = f"error: {str(error)[:200]}"
    prefill_at_context("transformer", lambda: tf(ids, logit_positions=last))
    for L in a.contexts:
        for variant in a.transformer_variants:
            for B in sorted(a.batches):
                row, b = None, B
                while row is None and b >= 1:  # the largest batch up to B whose cache fits
                    row = guarded(lambda: transformer_row(tf, variant, L, b, a))
                    b //= 2
                add({"arch": "transformer", "variant": variant, "L": L, "B": B, "oom": row is None,
                     **(row or {}), "requested_B": B})
    del tf
    torch.cuda.empty_cache()

    # ---- CD-SSM: every state by real prefill, then the variants, the compiled ones last ------
    cd = CDSSMForCausalLM(CDSSMConfig(D_MODEL, N_LAYERS, 2048, VOCAB))
    cd = cd.to(device=DEVICE, dtype=DTYPE).eval()
    prefill_at_context("cdssm", lambda: cd(ids, state=cd.init_state(1), logit_positions=last))
    states, next_tokens = {}, {}
    for B in a.batches:
        for L in a.contexts:
            states[B, L], ms = cdssm_prefill(cd, L, B, a.prefill_tokens)
            next_tokens[B, L] = torch.randint(0, VOCAB, (B,), device=DEVICE)
            result["prefill"].append({"arch": "cdssm", "L": L, "B": B, "ms": ms,
                                      "tok_per_s": B * L / ms * 1e3})
            print(json.dumps(result["prefill"][-1]), flush=True)
    compiled = torch.compile(cd, fullgraph=True)
    steps = {"eager": DecodeProgram(cd), "compiled": DecodeProgram(compiled)}
    reference = {}
    for variant in a.variants:
        if variant == "aoti":
            start = time.perf_counter()
            steps["aoti"] = aoti_decode(cd)
            result["setup_s"]["aoti_export_compile"] = time.perf_counter() - start
        for (B, L), state in states.items():
            row = guarded(lambda: cdssm_row(variant, steps, cd, compiled, state,
                                            next_tokens[B, L], reference, (B, L), a))
            add({"arch": "cdssm", "variant": variant, "L": L, "B": B, "requested_B": B,
                 "oom": row is None, **(row or {})})
    print_table(result, a)
    save()
    print(f"wrote {a.json}")


def print_table(result, a):
    rows = result["rows"]
    print(f"\ndecode, {result['device']}, torch {result['torch']}, bf16, d {D_MODEL}, "
          f"{N_LAYERS} layers, V {VOCAB}; ms per step (one token per sequence) and tokens/s")
    print(f"{'arch':<12}{'variant':<16}{'B':>4}" + "".join(f"{L:>20}" for L in a.contexts))
    keys = sorted({(r["arch"], r["variant"], r["requested_B"]) for r in rows},
                  key=lambda k: (k[0], k[2], k[1]))
    for arch, variant, B in keys:
        cells = []
        for L in a.contexts:
            r = next((r for r in rows if (r["arch"], r["variant"], r["requested_B"], r["L"])
                      == (arch, variant, B, L)), None)
            if r is None:
                cells.append("-")
            elif "ms" not in r:
                cells.append("OOM" if r.get("oom") else "error")
            else:
                b = "" if r["B"] == B else f" B={r['B']}"
                cells.append(f"{r['ms']:.3f}ms {r['tok_per_s'] / 1e3:.1f}k{b}")
        print(f"{arch:<12}{variant:<16}{B:>4}" + "".join(f"{x:>20}" for x in cells))
    print("\nbest tokens/s at each context (each arch at the largest batch it fits, best variant)")
    result["ratios"] = {}
    for L in a.contexts:
        best = {}
        for arch in ("cdssm", "transformer"):
            ok = [r for r in rows if r["arch"] == arch and r["L"] == L and "tok_per_s" in r]
            if ok:
                best[arch] = max(ok, key=lambda r: r["tok_per_s"])
        if len(best) == 2:
            ratio = best["cdssm"]["tok_per_s"] / best["transformer"]["tok_per_s"]
            result["ratios"][L] = ratio
            print(f"L={L:>6}: CD-SSM {best['cdssm']['tok_per_s']:,.0f} tok/s ({best['cdssm']['variant']}, "
                  f"B={best['cdssm']['B']}) vs Transformer {best['transformer']['tok_per_s']:,.0f} "
                  f"({best['transformer']['variant']}, B={best['transformer']['B']}): {ratio:.1f}x")
    if "prefill_at_context" in result:
        for arch, r in result["prefill_at_context"].items():
            print(f"prefill {arch}: L={r['L']}, B=1: {r['ms']:.1f} ms, {r['tok_per_s']:,.0f} tok/s")
    print("checks:", json.dumps(result["checks"]))


if __name__ == "__main__":
    main()
