"""Shared fixtures. Each block below is self-contained (owned by the tests that use it)."""

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

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


# ---- the AOTInductor packages of a tiny GPT-2-vocabulary CD-SSM (built once per session) -----
@pytest.fixture(scope="session")
def cdssm_packages(tmp_path_factory):
    """(package directory, checkpoint directory, eager model): a tiny CD-SSM (d 64, 2 layers,
    V = 50257, so the GPT-2 tokenizer applies) whose matrices are redrawn at
    N(0, (1.5/√fan_in)²) (at the real init a tied-embedding LM echoes its last token, which would
    hide decoding bugs) and whose state-energy EMA is non-zero (a package constant too), saved
    with ``save_pretrained`` and exported for CPU in float32 by `cdssm export`."""
    from cdssm.cli import main
    from cdssm.models import CDSSMForCausalLM

    torch.manual_seed(0)
    config = CDSSMConfig(d_model=64, n_layers=2, context_length=128, vocab_size=50257)
    model = CDSSMForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
    model.update_state_energy_ema(torch.rand(config.n_layers, config.n_heads))
    checkpoint = str(tmp_path_factory.mktemp("checkpoint"))
    model.save_pretrained(checkpoint)
    package = str(tmp_path_factory.mktemp("package"))
    assert main(["export", "--checkpoint", checkpoint, "--out", package, "--no-progress"]) == 0
    return package, checkpoint, model


# ---- the scripts of tools/ as modules (tools/ is not a package) --------------------------------
@pytest.fixture
def tool_module(monkeypatch):
    """load(name): tools/<name>.py imported as a module, with tools/ on sys.path for the sibling
    modules that the scripts import (bench_gpu, cuda_timing)."""
    tools = Path(__file__).parent.parent / "tools"
    monkeypatch.syspath_prepend(str(tools))

    def load(name):
        spec = importlib.util.spec_from_file_location(name, tools / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
