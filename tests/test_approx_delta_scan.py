"""The scan="approx" ablation: the chunked PyTorch op against the literal float64 loop."""

import pytest
import torch
import torch.nn.functional as F

from cdssm.ops.approx_delta_scan import approx_chunk_delta_scan
from cdssm.ops.reference import approx_delta_scan_reference, chunk_delta_scan_reference


def scan_inputs(B, T, H, D, P, dtype=torch.float64, initial=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        q=F.normalize(rand(B, T, H, D), dim=-1), k=F.normalize(rand(B, T, H, D), dim=-1),
        v=rand(B, T, H, P, 2), beta=torch.rand(B, T, H, generator=g, dtype=dtype),
        # slow and fast heads: log|z| from −2 to −0.002
        log_decay=-torch.exp(torch.empty(B, T, H, P, dtype=dtype).uniform_(-6, 0.7, generator=g)),
        phase=rand(B, T, H, P), initial_state=rand(B, H, 2 * P, D) if initial else None)


@pytest.mark.parametrize("B, T, H, D, P, C, initial", [
    (1, 1, 1, 4, 1, 4, False),     # one token
    (2, 45, 2, 8, 2, 16, True),    # partial last chunk, initial state
    (1, 64, 3, 8, 1, 64, True),    # exactly one chunk
    (2, 130, 2, 16, 3, 64, False),  # model chunk size, three chunks
])
def test_matches_literal_loop(B, T, H, D, P, C, initial):
    x = scan_inputs(B, T, H, D, P, initial=initial)
    o, final, energy = approx_chunk_delta_scan(**x, chunk_size=C, output_final_state=True,
                                               output_state_energy=True)
    ro, rfinal, renergy = approx_delta_scan_reference(**x, chunk_size=C)
    torch.testing.assert_close(o, ro, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, rfinal, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(energy, renergy, rtol=1e-10, atol=1e-10)


def test_gradients_match_literal_loop():
    x = scan_inputs(1, 40, 2, 8, 2)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    w = torch.randn(1, 40, 2, 2, 2, dtype=torch.float64)
    o, final = approx_chunk_delta_scan(**leaves, chunk_size=16, output_final_state=True)
    grads = torch.autograd.grad((o * w).sum() + final.square().sum(), list(leaves.values()))
    leaves_ref = {k: v.clone().requires_grad_() for k, v in x.items()}
    ro, rfinal, _ = approx_delta_scan_reference(**leaves_ref, chunk_size=16)
    ref = torch.autograd.grad((ro * w).sum() + rfinal.square().sum(), list(leaves_ref.values()))
    for name, a, b in zip(leaves, grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


def test_one_chunk_from_zero_is_exact_and_longer_is_not():
    """Within a chunk the approximation is exact; across chunks the erasure of s0 is missing."""
    x = scan_inputs(1, 100, 2, 8, 1, initial=False)
    exact = chunk_delta_scan_reference(**x, chunk_size=64)[0]
    approx = approx_chunk_delta_scan(**x, chunk_size=64)[0]
    torch.testing.assert_close(approx[:, :64], exact[:, :64], rtol=1e-10, atol=1e-10)
    assert (approx[:, 64:] - exact[:, 64:]).abs().max() > 1e-3


def test_fp32_and_flat_value_layout():
    x = scan_inputs(2, 70, 2, 64, 2, dtype=torch.float32)
    o, final = approx_chunk_delta_scan(**x, output_final_state=True)
    x64 = {k: v.double() for k, v in x.items()}
    ro, rfinal, _ = approx_delta_scan_reference(**x64)
    torch.testing.assert_close(o.double(), ro, rtol=1e-4, atol=1e-4)
    assert o.dtype == torch.float32 and final.dtype == torch.float32
    flat = approx_chunk_delta_scan(**{**x, "v": x["v"].flatten(3)})[0]
    torch.testing.assert_close(flat, o.flatten(3))


def test_compiles_fullgraph():
    x = scan_inputs(2, 70, 2, 16, 2, dtype=torch.float32)
    fn = lambda **a: approx_chunk_delta_scan(**a, output_final_state=True)  # noqa: E731
    # aot_eager: Dynamo (fullgraph) and AOTAutograd tracing of forward and backward without the
    # Inductor code generation time (Inductor compiles it too, with a warning that it leaves
    # complex ops to eager).
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    o, final = compiled(**leaves)
    o.sum().backward()
    eo, efinal = fn(**x)
    torch.testing.assert_close(o, eo)
    torch.testing.assert_close(final, efinal)
    assert all(v.grad is not None for v in leaves.values())


@pytest.mark.parametrize("change, name", [
    (dict(chunk_size=0), "chunk_size"),
    (dict(q=torch.zeros(1, 0, 1, 4)), "q"),
    (dict(beta=torch.zeros(1, 5, 2)), "beta"),
])
def test_bad_arguments(change, name):
    x = scan_inputs(1, 5, 1, 4, 1)
    if "q" in change:
        x = scan_inputs(1, 0, 1, 4, 1)
    args = {**x, **{k: v for k, v in change.items() if k != "chunk_size"}}
    with pytest.raises(ValueError, match=name):
        approx_chunk_delta_scan(**args, chunk_size=change.get("chunk_size", 64))
