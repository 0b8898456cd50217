"""Training throughput through the trainer itself: tokens/s, model TFLOP/s, MFU and peak memory of
``cdssm train`` steps on one GPU, for each --arch.

Each run builds a ``cdssm.training.loop.Trainer`` from --preset plus the overrides (the real
loader over --data-dir, torch.compile(fullgraph=True), bf16 autocast, AdamW, clipping, the EMA
update) and takes --steps optimizer steps, each timed on the host around ``train_step`` (which
ends in a host sync). The first --skip steps (compilation, warm-up) are left out of the summary:
the mean tokens/s (what ``cdssm train`` reports, pauses included), the median step time and its
tokens/s, model TFLOP/s (``cdssm.training.flops``) and MFU against --peak-tflops (the dense bf16
datasheet peak; the bf16 matmul rate measured in the same run is reported beside it), and the
peak allocated memory. The JSON keeps every step's time, the document count N of packed
batches, and the graphs Dynamo compiled.

--packed-before-fix runs packed batches without the dynamic mark on cu_seqlens that
``cdssm.training.loop.device_batch`` adds (the trainer before that fix), to measure the
recompilation on the first new document count.

Example (the gpt2-small throughput of docs/benchmarks.md):
  python tools/bench_train.py --preset gpt2-small --data-dir data/shakespeare --grad-accum 1 \\
      --steps 120 --json runs/bench_train.json
"""

import argparse
import contextlib
import json
import statistics
import time
from unittest import mock

import torch

from cuda_timing import gpu_lock, matmul_peak_tflops

from cdssm.training.config import ARCHS, PRESETS, resolve_config
from cdssm.training.loop import Trainer
from cdssm.training.parallel import ParallelInfo
from cdssm.files import write_json

H100_SXM_BF16_TFLOPS = 989.4  # dense, no sparsity


def graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def run(config, steps: int, skip: int, lock, before_fix: bool) -> dict:
    device = torch.device(config.device)
    cuda = device.type == "cuda"
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    patch = (mock.patch.object(torch._dynamo, "maybe_mark_dynamic", lambda t, d: None)
             if before_fix else contextlib.nullcontext())
    trainer = Trainer(config, ParallelInfo(), device, None)
    documents = []
    next_batch = trainer.train_loader.next_batch

    def counted():
        batch = next_batch()
        documents.append(None if batch.cu_seqlens is None else batch.cu_seqlens.numel() - 1)
        return batch

    trainer.train_loader.next_batch = counted
    tokens = config.tokens_per_step()
    times, graphs = [], []
    with patch:
        trainer.train_step()  # compiles, outside the lock
        times.append(None)
        graphs.append(graphs_compiled())
        with gpu_lock(lock):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for _ in range(steps - 1):
                tic = time.perf_counter()
                trainer.train_step()
                times.append(time.perf_counter() - tic)
                graphs.append(graphs_compiled())
            peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    timed = times[skip:]
    median_s = statistics.median(timed)
    return {"arch": config.arch, "packed": config.packed, "before_fix": before_fix,
            "d_model": config.d_model, "n_layers": config.n_layers, "seq_len": config.seq_len,
            "tokens_per_step": tokens, "steps": steps, "skip": skip,
            "flops_per_token": trainer.flops_per_token,
            "mean_tok_per_s": tokens * len(timed) / sum(timed),
            "median_step_ms": 1e3 * median_s, "median_tok_per_s": tokens / median_s,
            "max_step_ms": 1e3 * max(timed),
            "model_tflops": trainer.flops_per_token * tokens / median_s / 1e12,
            "peak_gib": peak_gib, "graphs": graphs[-1], "step_s": times,
            "graphs_per_step": graphs, "documents": documents}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2-small")
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--data-dir", required=True, help="prepared shards (cdssm data prepare)")
    p.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    p.add_argument("--skip", type=int, default=1, help="first steps left out of the summary")
    p.add_argument("--d-model", type=int)
    p.add_argument("--n-layers", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--packed", action="store_true", help="packed documents with cu_seqlens")
    p.add_argument("--packed-before-fix", action="store_true",
                   help="packed, without the dynamic mark on cu_seqlens (see above)")
    p.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_TFLOPS,
                   help="dense bf16 peak for MFU [H100 SXM: 989.4]")
    p.add_argument("--lock", help="GPU lock file shared with concurrent benchmarks")
    p.add_argument("--json", default="runs/bench_train.json")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a dry run of the code paths (no memory or matmul figures)")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("needs a CUDA GPU (or --device cpu for a dry run)")
    if a.skip < 1 or a.steps < a.skip + 2:
        p.error("--skip: expected >= 1 (the first step compiles); --steps >= --skip + 2")
    overrides = {k: getattr(a, k) for k in ("d_model", "n_layers", "seq_len", "batch_size",
                                            "grad_accum") if getattr(a, k) is not None}
    overrides.update(data_dir=a.data_dir, device=a.device, compile=True,
                     packed=a.packed or a.packed_before_fix, eval_every=0, checkpoint_every=0,
                     steps=a.steps)
    measured_peak = float("nan")
    if a.device == "cuda":
        with gpu_lock(a.lock):
            measured_peak = matmul_peak_tflops()
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__,
              "preset": a.preset, "overrides": overrides, "peak_tflops": a.peak_tflops,
              "measured_matmul_tflops": measured_peak, "runs": []}
    for arch in a.archs:
        config = resolve_config(a.preset, None, dict(overrides, arch=arch))
        try:
            row = run(config, a.steps, a.skip, a.lock, a.packed_before_fix)
            row["mfu"] = row["model_tflops"] / a.peak_tflops
        except torch.OutOfMemoryError:
            row = {"arch": arch, "oom": True}
        if a.device == "cuda":
            torch.cuda.empty_cache()
        result["runs"].append(row)
        print(json.dumps({k: v for k, v in row.items()
                          if k not in ("step_s", "graphs_per_step", "documents")}), flush=True)

    print(f"\n`{a.preset}` training steps ({result['device']}, torch {torch.__version__}, "
          f"bf16 autocast, compiled; MFU against {a.peak_tflops:.0f} TFLOP/s, measured bf16 "
          f"matmul {measured_peak:.0f} TFLOP/s)")
    print(f"{'arch':<12} {'packed':<7} {'tok/step':>8} {'mean tok/s':>11} {'median tok/s':>13} "
          f"{'max step s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9} {'graphs':>6}")
    for r in result["runs"]:
        if r.get("oom"):
            print(f"{r['arch']:<12} OOM")
            continue
        packed = ("before" if r["before_fix"] else "yes") if r["packed"] else "no"
        print(f"{r['arch']:<12} {packed:<7} {r['tokens_per_step']:>8} "
              f"{r['mean_tok_per_s']:>11,.0f} {r['median_tok_per_s']:>13,.0f} "
              f"{r['max_step_ms'] / 1e3:>10.2f} {r['model_tflops']:>8.1f} {r['mfu']:>6.1%} "
              f"{r['peak_gib']:>9.1f} {r['graphs']:>6}")
    write_json(a.json, result)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
