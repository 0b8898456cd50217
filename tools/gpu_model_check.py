"""GPU validation of the whole model: compiled training step, CUDA graphs, decode. Pass/fail table.

On a CUDA device, for the CD-SSM LM (P = 1 and P = 2) and the Transformer baseline:
  compile      torch.compile(model, fullgraph=True) loss and gradients equal eager (fp32)
  cudagraph    the compiled step captured with mode="reduce-overhead" gives the eager loss
  bf16         a bf16-autocast step is finite and within 2 % of the fp32 loss
  decode       prefill + step-by-step decode logits equal the full forward (fp32)
Exits non-zero on any failure. Example: python tools/gpu_model_check.py
"""

import sys

import torch

from cdssm.config import CDSSMConfig
from cdssm.models.cdssm import CDSSMForCausalLM
from cdssm.models.transformer import TransformerConfig, TransformerForCausalLM


def models():
    yield "cdssm P=1", CDSSMForCausalLM(CDSSMConfig(256, 2, 512, 512))
    yield "cdssm P=2", CDSSMForCausalLM(CDSSMConfig(256, 2, 512, 512, state_pairs=2))
    yield "transformer", TransformerForCausalLM(TransformerConfig(256, 2, 512, 512))


def loss_and_grads(model, fn, ids):
    model.zero_grad(set_to_none=True)
    loss = fn(ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(name, model, ids):
    rows = []
    loss, grads = loss_and_grads(model, model, ids)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    c_loss, c_grads = loss_and_grads(model, compiled, ids)
    err = max([rel(c_loss, loss)] + [rel(a, b) for a, b in zip(c_grads, grads)])
    rows.append((name, "compile", err, 1e-4))

    graphed = torch.compile(model, fullgraph=True, mode="reduce-overhead", dynamic=False)
    for _ in range(3):  # warm-up, record, replay
        torch.compiler.cudagraph_mark_step_begin()
        g_loss, _ = loss_and_grads(model, graphed, ids)
        g_loss = g_loss.clone()
    rows.append((name, "cudagraph", rel(g_loss, loss), 1e-4))

    with torch.autocast("cuda", dtype=torch.bfloat16):
        b_loss, _ = loss_and_grads(model, compiled, ids)
    rows.append((name, "bf16", rel(b_loss, loss) if torch.isfinite(b_loss) else float("inf"), 2e-2))

    with torch.no_grad():
        full = model(ids).logits
        T0 = ids.shape[1] - 8
        out = model(ids[:, :T0], state=model.init_state(ids.shape[0]))
        steps, state = [out.logits], out.state
        for t in range(T0, ids.shape[1]):
            out = model(ids[:, t:t + 1], state=state)
            steps.append(out.logits)
            state = out.state
    rows.append((name, "decode", rel(torch.cat(steps, 1), full), 1e-4))
    return rows


def main():
    if not torch.cuda.is_available():
        print("gpu_model_check: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ids = torch.randint(0, 512, (4, 200), device="cuda")
    rows = []
    for name, model in models():
        rows += check(name, model.cuda(), ids)
        torch._dynamo.reset()
    print(f"{'model':<12} {'check':<10} {'rel err':>10} {'tol':>8}  result")
    failed = 0
    for name, what, err, tol in rows:
        ok = err <= tol
        failed += not ok
        print(f"{name:<12} {what:<10} {err:>10.2e} {tol:>8.0e}  {'PASS' if ok else 'FAIL'}")
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
