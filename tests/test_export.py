"""torch.export → AOTInductor package of the tiny CD-SSM, loaded in a fresh Python process.

A process that loads a cdssm package must ``import cdssm`` before
``torch._inductor.aoti_load_package``: that loads the op library (cdssm/_C*.so: the schemas and
CPU/CUDA kernels of the ``cdssm::*`` custom ops the package calls, e.g.
``cdssm::chunk_delta_scan_fwd`` and ``cdssm::causal_conv1d_silu_fwd``) and registers the output
NamedTuple (``cdssm.models.CausalLMOutput``) under the name the package stores. A C++ runner
instead loads the library itself (``cdssm.ops._library.library_path()``).

The package is built once per session (conftest.py: ``cdssm_aoti_package``).
"""

import subprocess
import sys

import torch

LOADER = """
import sys
import torch
import cdssm  # the custom ops and the output type, before loading the package

package, inputs, outputs = sys.argv[1:]
runner = torch._inductor.aoti_load_package(package)
out = [runner(ids) for ids in torch.load(inputs)]
assert all(type(o).__name__ == "CausalLMOutput" for o in out)
torch.save([o.logits for o in out], outputs)
"""


def test_package_in_fresh_process_matches_eager(cdssm_aoti_package, tmp_path):
    package, model = cdssm_aoti_package
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randint(0, V, (2, T), generator=g) for T in (2, 64, 65, 128)]
    torch.save(inputs, tmp_path / "inputs.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, package, str(tmp_path / "inputs.pt"),
         str(tmp_path / "out.pt")],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    logits = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        for ids, got in zip(inputs, logits):
            torch.testing.assert_close(got, model(ids).logits, rtol=1e-4, atol=1e-4)
