"""Shared fixtures. Each block below is self-contained (owned by the tests that use it)."""

import pytest
import torch

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
    (chunk_size < T ≤ context_length) and compiled for CPU by AOTInductor; logits-only forward.

    The range starts above one chunk because the scan's boundary-state output has ceil(T/C)
    rows: tracing it guards ceil(T/C) != 1, which export refuses for a range that includes T ≤ C.
    """
    from cdssm.models import CDSSMForCausalLM

    torch.manual_seed(0)
    config = CDSSMConfig(**TINY_CDSSM)
    model = CDSSMForCausalLM(config).eval()
    model.update_state_energy_ema(torch.rand(config.n_layers, config.n_heads))  # exported too
    seq = torch.export.Dim("seq", min=config.chunk_size + 1, max=config.context_length)
    example = torch.randint(0, config.vocab_size, (2, 70))
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes={"input_ids": {1: seq}})
    path = str(tmp_path_factory.mktemp("aoti") / "cdssm_tiny.pt2")
    torch._inductor.aoti_compile_and_package(program, package_path=path)
    return path, model
