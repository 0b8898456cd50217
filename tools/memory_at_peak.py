"""What is live at the peak of one compiled block fwd+bwd step (bench_gpu.py's block step, bf16).

Records the CUDA caching allocator's history (torch.cuda.memory._record_memory_history) over one
step after a warm-up, replays it to find the moment of peak allocated memory, and lists the
blocks live then, largest first, with where each was allocated: the innermost frame in Inductor's
generated code (its line, and the "Source Nodes" comment of the kernel that fills the buffer,
which names the model's tensors) or else the innermost cdssm/autograd frame. Blocks allocated
before the step (weights, their gradients, the input) are not counted.

Example: python tools/memory_at_peak.py --arch cdssm --length 2048 --json runs/memory_at_peak.json
"""

import argparse
import linecache
import re

import torch

from bench_gpu import add_block_shape_args, block_forward_bf16, block_shape

from cdssm.files import write_json

MiB = 2 ** 20


def _source_nodes(filename: str, line: int) -> str:
    """The first "Source Nodes: [...]" comment at or after ``line`` of a generated file."""
    for i in range(line, line + 40):
        text = linecache.getline(filename, i)
        m = re.search(r"Source Nodes: \[([^\]]*)\]", text)
        if m:
            return m.group(1)[:120]
    return ""


def _where(frames: list) -> str:
    for f in frames:  # innermost first
        name = f["filename"]
        if "torchinductor" in name or re.search(r"/[a-z0-9]{2}/c[a-z0-9]+\.py$", name):
            code = linecache.getline(name, f["line"]).strip()[:70]
            return f"{code}  <- {_source_nodes(name, f['line'])}"
    for f in frames:
        if "cdssm" in f["filename"] or "autograd" in f["filename"]:
            return f"{f['filename'].split('site-packages/')[-1]}:{f['line']} {f['name']}"
    return frames[0]["name"] if frames else "?"


def live_at_peak(step) -> dict:
    """Replays one step()'s allocator trace: the peak above the step's start and the blocks
    live then."""
    step()  # compile and allocate gradients
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(stacks="python", max_entries=1_000_000)
    step()
    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    trace = snapshot["device_traces"][torch.cuda.current_device()]
    live, total, peak, at_peak = {}, 0, 0, {}
    for e in trace:
        if e["action"] == "alloc":
            live[e["addr"]] = e
            total += e["size"]
        elif e["action"] == "free_requested" and e["addr"] in live:
            total -= live.pop(e["addr"])["size"]
        if total > peak:
            peak, at_peak = total, dict(live)
    groups = {}
    for e in at_peak.values():
        key = _where(e.get("frames", []))
        size, count = groups.get(key, (0, 0))
        groups[key] = (size + e["size"], count + 1)
    rows = sorted(({"where": k, "mib": s / MiB, "blocks": c} for k, (s, c) in groups.items()),
                  key=lambda r: -r["mib"])
    return {"peak_mib": peak / MiB, "live": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=("cdssm", "transformer"), default="cdssm")
    p.add_argument("--keep-activations", action="store_true",
                   help="CD-SSM: keep every activation (no selective recomputation)")
    add_block_shape_args(p)
    p.add_argument("--top", type=int, default=30, help="rows printed")
    p.add_argument("--json", default="runs/memory_at_peak.json")
    a = p.parse_args(argv)
    L, B = block_shape(p, a)
    forward, grad = block_forward_bf16(a.arch, L, B,
                                       not a.keep_activations)
    r = live_at_peak(lambda: forward().backward(grad))
    print(f"{a.arch} block, L {L}: peak {r['peak_mib']:.0f} MiB allocated during the step; "
          f"live then:")
    for row in r["live"][:a.top]:
        print(f"  {row['mib']:8.1f} MiB x{row['blocks']:<3} {row['where']}")
    write_json(a.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                        "arch": a.arch, "L": L, "tokens": a.tokens,
                        "recompute": not a.keep_activations, **r})
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
