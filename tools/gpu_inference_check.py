"""GPU validation of the inference paths. Pass/fail table; exits non-zero on any failure.

On a CUDA device, with small random models (matrices redrawn so they do not echo):
  cudagraph   generate(cuda_graph=True) tokens == eager tokens, greedy and sampled, packed
              prompts of different lengths; CD-SSM P = 1, P = 2, and bf16 weights
  transformer cuda_graph=True on the Transformer raises ValueError (its KV cache grows)
  loader      a CUDA AOTInductor package of a plain nn.Linear (no cdssm code) loads and runs in a
              fresh process; when the loader crashes, the aoti, cli and cpp checks fail as "not
              run" instead of killing this process. Seen (SIGSEGV) on a machine whose processes
              resolve libstdc++'s std::ostringstream wrongly; run there with
              LD_PRELOAD=/lib/x86_64-linux-gnu/libstdc++.so.6 (docs/benchmarks.md)
  aoti        export_packages(device="cuda"): PackagedLM tokens == eager tokens (greedy, sampled)
  cli         `cdssm generate --package` in a fresh process, `--checkpoint` and
              `--checkpoint --cuda-graph` print the same text and ids
  cpp         tools/aoti_runner built with CMake, run on the CUDA packages == Python greedy
              (skipped when cmake is missing)
Example: python tools/gpu_inference_check.py --json runs/gpu_inference_check.json
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

from cdssm.config import CDSSMConfig
from cdssm.inference.export import export_packages
from cdssm.inference.generate import generate
from cdssm.inference.packages import PackagedLM
from cdssm.models.cdssm import CDSSMForCausalLM
from cdssm.models.registry import build_model
from cdssm.ops._library import library_path
from cdssm.files import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [[464, 3290, 373], [50], list(range(1000, 1070)), [7, 8, 9, 10]]
SAMPLING = [dict(temperature=0), dict(temperature=1.0, seed=3), dict(temperature=0.9, top_k=20,
                                                                      top_p=0.9, seed=5)]


def redrawn(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
    return model.eval()


def tiny_cdssm(state_pairs=1):
    torch.manual_seed(0)
    return redrawn(CDSSMForCausalLM(CDSSMConfig(128, 2, 256, 50257, state_pairs=state_pairs)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="runs/gpu_inference_check.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    rows = []

    def record(name, ok, detail=""):
        rows.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)

    def attempt(name, check):
        """Runs check(); an exception is a failure of ``name``, and the next checks still run."""
        try:
            check()
        except Exception as error:
            record(name, False, f"{type(error).__name__}: {str(error)[:300]}")

    def cuda_graph_tokens(name, model):
        model = model.cuda()
        for kw in SAMPLING:
            eager = generate(model, PROMPTS, 16, **kw)
            graphed = generate(model, PROMPTS, 16, cuda_graph=True, **kw)
            record(f"cudagraph {name} {kw}", graphed == eager, f"{sum(map(len, eager))} tokens")

    for name, make in (("P=1", tiny_cdssm), ("P=2", lambda: tiny_cdssm(2)),
                       ("P=1 bf16", lambda: tiny_cdssm().to(torch.bfloat16))):
        attempt(f"cudagraph {name}", lambda: cuda_graph_tokens(name, make()))

    def transformer_refuses():
        transformer = redrawn(build_model("transformer", 128, 2, 256, 50257)).cuda()
        try:
            generate(transformer, PROMPTS, 4, cuda_graph=True)
            record("transformer cuda_graph raises", False, "no error")
        except ValueError as error:
            record("transformer cuda_graph raises", "fixed shapes" in str(error),
                   str(error)[:80])

    attempt("transformer cuda_graph raises", transformer_refuses)

    work = tempfile.mkdtemp()
    loader_ok, loader_detail = cuda_aoti_loader_works(work)
    record("loader: plain nn.Linear CUDA AOTI package loads in a fresh process", loader_ok,
           loader_detail)
    if not loader_ok:
        for name in ("aoti cuda package", "cli generate", "cpp runner on cuda packages"):
            record(name, False, "not run: the CUDA AOTI loader fails on a plain nn.Linear "
                                "package (loader check; try LD_PRELOAD of the system libstdc++)")
        return finish(a.json, rows)
    model = tiny_cdssm()
    checkpoint, package = os.path.join(work, "checkpoint"), os.path.join(work, "package")
    model.save_pretrained(checkpoint)
    model = model.cuda()

    def package_tokens():
        export_packages(model, package, device="cuda", progress=False)
        packaged = PackagedLM(package)
        for kw in SAMPLING:
            eager, got = generate(model, PROMPTS, 16, **kw), generate(packaged, PROMPTS, 16, **kw)
            record(f"aoti cuda package {kw}", got == eager, f"{sum(map(len, eager))} tokens")

    attempt("aoti cuda package", package_tokens)

    def cli_outputs():
        options = ["--prompt", "The state of the art", "--max-new-tokens", "16", "--seed", "2",
                   "--print-ids"]
        outputs = {}
        for source in (["--package", package], ["--checkpoint", checkpoint, "--device", "cuda"],
                       ["--checkpoint", checkpoint, "--device", "cuda", "--cuda-graph"]):
            result = subprocess.run([sys.executable, "-m", "cdssm", "generate", *source,
                                     *options], capture_output=True, text=True, timeout=300)
            outputs[" ".join(source[:1] + source[2:])] = result.stdout \
                if result.returncode == 0 else f"error {result.returncode}: {result.stderr[-300:]}"
        record("cli generate --package == --checkpoint == --cuda-graph",
               len(set(outputs.values())) == 1 and "ids:" in next(iter(outputs.values())),
               json.dumps(outputs)[:400])

    attempt("cli generate", cli_outputs)

    def cpp_runner():
        if not shutil.which("cmake"):
            record("cpp runner on cuda packages (skipped: no cmake)", True)
            return
        build = os.path.join(work, "build")
        for command in (["cmake", "-S", os.path.join(ROOT, "tools", "aoti_runner"), "-B", build,
                         "-DCMAKE_BUILD_TYPE=Release",
                         f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                        ["cmake", "--build", build, "-j8"]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if result.returncode:
                record("cpp runner on cuda packages", False, "build: " + result.stderr[-300:])
                return
        prompt = PROMPTS[0]
        result = subprocess.run([os.path.join(build, "aoti_runner"), library_path(), package,
                                 "12", *map(str, prompt)], capture_output=True, text=True,
                                timeout=300)
        expected = generate(model, [prompt], 12, temperature=0)[0]
        got = [int(t) for t in result.stdout.split()] if result.returncode == 0 else None
        record("cpp runner on cuda packages", got == expected,
               f"{got} vs {expected} {result.stderr[-200:]}")

    attempt("cpp runner on cuda packages", cpp_runner)
    return finish(a.json, rows)


def cuda_aoti_loader_works(work: str) -> tuple:
    """(ok, detail): compiles a CUDA AOTInductor package of nn.Linear(64, 64) here and loads and
    runs it in a fresh Python process that never imports cdssm, so a crash of the loader itself
    is told apart from one in cdssm's packages and does not end this process."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 64).cuda()
    x = torch.randn(4, 64, device="cuda")
    path = os.path.join(work, "linear.pt2")
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(torch.export.export(linear, (x,)),
                                                 package_path=path)
        torch.save({"x": x, "y": linear(x)}, os.path.join(work, "linear_io.pt"))
    code = ("import sys, torch; io = torch.load(sys.argv[2]); "
            "y = torch._inductor.aoti_load_package(sys.argv[1])(io['x']); "
            "print(float((y - io['y']).abs().max()))")
    result = subprocess.run([sys.executable, "-c", code, path, os.path.join(work, "linear_io.pt")],
                            capture_output=True, text=True, timeout=300)
    if result.returncode:
        return False, f"exit {result.returncode}: {result.stderr.strip()[-200:]}"
    diff = float(result.stdout.split()[-1])
    return diff < 1e-3, f"max |Δ| vs eager {diff:.1e}"


def finish(json_path: str, rows: list) -> int:
    """Writes the JSON, prints the summary; the exit status is 1 when any check failed."""
    write_json(json_path, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "rows": rows})
    failed = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
