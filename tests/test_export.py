"""AOTInductor packages of `cdssm export` (conftest.py: ``cdssm_packages``, built once per
session): run in a fresh Python process and from the C++ runner (tools/aoti_runner), against the
eager model.

A process that loads cdssm packages must ``import cdssm`` first (the custom ops and the
``CDSSMState`` / output pytree nodes the packages name); a C++ program ``dlopen``s the op
library (``cdssm.ops._library.library_path()``) instead.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from cdssm.inference.generate import ModelRunner, generate
from cdssm.ops._library import library_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, prompts, generate keywords): greedy and sampled, packed prompts of different lengths
# (one spans two 64-token chunks), a one-token prompt (a decode step from the zero state).
g = torch.Generator().manual_seed(1)
LONG = torch.randint(0, 50257, (70,), generator=g).tolist()
GENERATE_CASES = [
    ("greedy", [[464, 3290, 373], [50], LONG], dict(temperature=0)),
    ("sampled", [[464, 3290, 373], [50], LONG], dict(temperature=1.0, seed=3)),
    ("top_k", [[464, 3290, 373], LONG], dict(temperature=0.9, top_k=20, seed=5)),
    ("top_p", [[11, 12]], dict(temperature=1.0, top_p=0.9, seed=7)),
    ("one token", [[50]], dict(temperature=0)),
]
# (prompts) whose prefill logits and first decode step are compared directly.
LOGIT_CASES = [[[7, 8]], [LONG[:64], LONG[:65], [3]], [LONG, LONG[:2]]]

FRESH_PROCESS = """
import json, sys
import torch
from cdssm.inference.generate import generate
from cdssm.inference.packages import PackagedLM

package, cases, out = sys.argv[1:]
lm = PackagedLM(package)
cases = json.load(open(cases))
tokens = [generate(lm, prompts, 10, **kwargs) for _, prompts, kwargs in cases["generate"]]
logits = []
for prompts in cases["logits"]:
    prefill, state = lm.prefill(prompts)
    step, _ = lm.step(prefill.argmax(-1), state)
    logits.append((prefill, step))
torch.save({"tokens": tokens, "logits": logits}, out)
"""


@pytest.fixture(scope="module")
def fresh_process_results(cdssm_packages, tmp_path_factory):
    package, _, _ = cdssm_packages
    tmp = tmp_path_factory.mktemp("fresh")
    cases = tmp / "cases.json"
    cases.write_text(json.dumps({"generate": GENERATE_CASES, "logits": LOGIT_CASES}))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, package, str(cases),
                             str(tmp / "out.pt")], capture_output=True, text=True,
                            cwd=str(tmp), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(tmp / "out.pt")


@pytest.mark.parametrize("case", range(len(GENERATE_CASES)), ids=[c[0] for c in GENERATE_CASES])
def test_package_tokens_equal_eager_tokens(cdssm_packages, fresh_process_results, case):
    _, prompts, kwargs = GENERATE_CASES[case]
    eager = generate(cdssm_packages[2], prompts, 10, **kwargs)
    assert fresh_process_results["tokens"][case] == eager
    assert all(len(t) == 10 for t in eager)


@pytest.mark.parametrize("case", range(len(LOGIT_CASES)))
def test_package_logits_equal_eager_logits(cdssm_packages, fresh_process_results, case):
    runner = ModelRunner(cdssm_packages[2])
    prefill, state = runner.prefill(LOGIT_CASES[case])
    step, _ = runner.step(prefill.argmax(-1), state)
    got_prefill, got_step = fresh_process_results["logits"][case]
    torch.testing.assert_close(got_prefill, prefill, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_step, step, rtol=1e-4, atol=1e-4)


def test_manifest(cdssm_packages):
    package, _, model = cdssm_packages
    manifest = json.load(open(os.path.join(package, "manifest.json")))
    assert manifest["config"] == model.config.to_dict() and manifest["arch"] == "cdssm"
    assert (manifest["device"], manifest["dtype"]) == ("cpu", "float32")
    c = model.config
    assert manifest["state"] == {
        "conv": {"shape": [c.n_layers, 1, c.d_inner, c.conv_kernel - 1], "dtype": "float32"},
        "ssm": {"shape": [c.n_layers, 1, c.n_heads, 2 * c.state_pairs, c.head_dim],
                "dtype": "float32"}}
    assert sorted(os.listdir(package)) == ["decode.pt2", "manifest.json", "prefill.pt2"]


# ---- the C++ runner ---------------------------------------------------------------------------
def find_tool(name: str):
    """``name`` on PATH or beside this python (where pip puts the cmake and ninja wheels)."""
    return shutil.which(name, path=os.pathsep.join([os.path.dirname(sys.executable),
                                                    os.environ.get("PATH", "")]))


@pytest.fixture(scope="session")
def aoti_runner(tmp_path_factory):
    """tools/aoti_runner built with CMake against the installed torch (once per session)."""
    cmake, ninja = find_tool("cmake"), find_tool("ninja")
    assert cmake, "cmake not found: install the test extras (pip install -e '.[test]')"
    build = tmp_path_factory.mktemp("aoti_runner_build")
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    configure = [cmake, "-S", os.path.join(ROOT, "tools", "aoti_runner"), "-B", str(build),
                 *generator, "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    for command in (configure, [cmake, "--build", str(build), "-j2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return str(build / "aoti_runner")


@pytest.mark.parametrize("prompt,new_tokens", [([464, 3290, 373], 12), (LONG, 5), ([7, 8], 1)])
def test_cpp_runner_equals_python_greedy(cdssm_packages, aoti_runner, prompt, new_tokens):
    package, _, model = cdssm_packages
    result = subprocess.run([aoti_runner, library_path(), package, str(new_tokens),
                             *map(str, prompt)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = generate(model, [prompt], new_tokens, temperature=0)[0]
    assert [int(t) for t in result.stdout.split()] == expected


@pytest.mark.parametrize("arguments,status,message", [
    (["{library}", "{package}", "3", "5"], 2, "usage:"),
    (["{library}", "{package}", "-1", "5", "6"], 2, "MAX_NEW_TOKENS: expected an integer >= 0"),
    (["{library}", "{package}", "3", "5", "x"], 2, "ID: expected a token id >= 0"),
    (["/no/such/library.so", "{package}", "3", "5", "6"], 1, "OP_LIBRARY: cannot load"),
    (["{library}", "/no/such/package", "3", "5", "6"], 1, "aoti_runner:"),
])
def test_cpp_runner_errors(cdssm_packages, aoti_runner, arguments, status, message):
    arguments = [a.format(library=library_path(), package=cdssm_packages[0]) for a in arguments]
    result = subprocess.run([aoti_runner, *arguments], capture_output=True, text=True, timeout=300)
    assert result.returncode == status and message in result.stderr
