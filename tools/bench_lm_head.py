"""GPU benchmark: the LM head + chunked cross-entropy with and without the vocabulary padding.

`chunked_causal_lm_loss` (cdssm/models/lm_loss.py) multiplies the hidden states by the tied
embedding zero-padded to a multiple of ``vocab_align`` rows (default ``VOCAB_ALIGN``), so that
the logits have an aligned row stride (V = 50257 is odd). This times its forward + backward,
bf16 autocast, on --tokens × d_model hidden states against a (V, d_model) fp32 weight, with the
default padding and without it (vocab_align 1), eager and compiled (fullgraph), all rows in one
run.
Prints ms, tokens/s, peak memory and the padded/unpadded speed-up; writes JSON.

Example: python tools/bench_lm_head.py --json runs/bench_lm_head.json
"""

import argparse
import functools
import json

import torch

from cuda_timing import cuda_time_ms, peak_mib

from cdssm.files import write_json
from cdssm.models import lm_loss


def head_step(align, compiled, tokens, d_model, vocab):
    """A fwd+bwd step of chunked_causal_lm_loss with vocab_align = align."""
    torch.manual_seed(0)
    hidden = torch.randn(1, tokens, d_model, device="cuda", requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(vocab, d_model, device="cuda") * d_model ** -0.5)
    labels = torch.randint(0, vocab, (1, tokens), device="cuda")
    loss_fn = functools.partial(lm_loss.chunked_causal_lm_loss, vocab_align=align)
    if compiled:
        loss_fn = torch.compile(loss_fn, fullgraph=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(hidden, weight, labels)
        loss.backward()
        hidden.grad = weight.grad = None

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32768, help="hidden-state rows per step")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default="runs/bench_lm_head.json")
    a = p.parse_args(argv)
    for name in ("tokens", "d_model", "vocab_size", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(a, name)}")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")

    rows = []
    for compiled in (False, True):
        for align in (1, lm_loss.VOCAB_ALIGN):
            step = head_step(align, compiled, a.tokens, a.d_model, a.vocab_size)
            ms = cuda_time_ms(step, a.warmup, a.repeats)
            rows.append({"compiled": compiled, "vocab_align": align, "ms": ms,
                         "ktok_per_s": a.tokens / ms, "peak_mib": peak_mib(step)})
            print(json.dumps(rows[-1]), flush=True)
        torch._dynamo.reset()

    print(f"\nLM head + chunked CE fwd+bwd ({torch.cuda.get_device_name()}, bf16 autocast, "
          f"{a.tokens} tokens, d {a.d_model}, V {a.vocab_size})")
    print(f"{'mode':>9} {'align':>6} {'ms':>8} {'ktok/s':>8} {'MiB':>7} {'speed-up':>9}")
    for r in rows:
        base = next(b for b in rows if b["compiled"] == r["compiled"] and b["vocab_align"] == 1)
        print(f"{'compiled' if r['compiled'] else 'eager':>9} {r['vocab_align']:>6} {r['ms']:>8.2f} "
              f"{r['ktok_per_s']:>8.0f} {r['peak_mib']:>7.0f} {base['ms'] / r['ms']:>8.2f}×")
    write_json(a.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                        "tokens": a.tokens, "d_model": a.d_model, "vocab_size": a.vocab_size,
                        "rows": rows})
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
