"""Shared fixtures. Each block below is self-contained (owned by the tests that use it)."""

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# A fresh Inductor cache per test session: cached graphs are keyed without the source of the
# custom ops' fake kernels, so a cache from an older build could replay stale output shapes.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cdssm-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

# ---- the tiny CD-SSM used by the model tests --------------------------------------------------
from cdssm.config import CDSSMConfig

# d = 64 → E = 128, H = 2 heads of 64; two layers; T = 70 spans two 64-token chunks.
TINY_CDSSM = dict(d_model=64, n_layers=2, context_length=128, vocab_size=97)


@pytest.fixture
def tiny_config() -> CDSSMConfig:
    """The tiny CD-SSM config (P = 1) of the model tests."""
    return CDSSMConfig(**TINY_CDSSM)


# ---- the AOTInductor package of the tiny CD-SSM (built once per session) ----------------------
@pytest.fixture(scope="session")
def cdssm_aoti_package(tmp_path_factory):
    """(package path, eager model) of the tiny CD-SSM, exported with a dynamic sequence length
    (2 ≤ T ≤ context_length, across the one-chunk boundary) and compiled for CPU by AOTInductor;
    logits-only forward."""
    from cdssm.models import CDSSMForCausalLM

    torch.manual_seed(0)
    config = CDSSMConfig(**TINY_CDSSM)
    model = CDSSMForCausalLM(config).eval()
    model.update_state_energy_ema(torch.rand(config.n_layers, config.n_heads))  # exported too
    seq = torch.export.Dim("seq", min=2, max=config.context_length)
    example = torch.randint(0, config.vocab_size, (2, 70))
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes={"input_ids": {1: seq}})
    path = str(tmp_path_factory.mktemp("aoti") / "cdssm_tiny.pt2")
    torch._inductor.aoti_compile_and_package(program, package_path=path)
    return path, model
