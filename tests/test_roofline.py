"""tools/roofline.py: the rooflines behind the GPU benchmarks' "% roof" and "roof" columns, against
the figures the project guide and docs/benchmarks.md state (and bench_gpu's block parameters)."""

import pytest


@pytest.mark.parametrize("tokens,H,D,P,per_token_head", [
    (1, 1, 64, 1, 818),       # fwd 2·(128 + 2 + 1 + 2) + 4·2, bwd that + 2·(128 + 2 + 1) + 4·2
    # each pair adds v, o, log_decay and phase forward (4 + 4 + 8), and v, log_decay, phase, dy,
    # dv, d log_decay and d phase backward (4 + 8 + 4 + 4 + 8)
    (1, 1, 64, 8, 818 + 7 * (16 + 28)),
    (32768, 24, 64, 1, 818),
    (10, 3, 16, 2, 2 * (32 + 4 + 1 + 4) + 16 + 2 * (32 + 4 + 1 + 4) + 16 + 2 * (32 + 4 + 1) + 16),
])
def test_scan_floor_bytes(tokens, H, D, P, per_token_head, tool_module):
    assert tool_module("roofline").scan_floor_bytes(tokens, H, D, P) == tokens * H * per_token_head


def test_scan_floor_is_the_guides_memory_floor(tool_module):
    """The guide's ≈ 0.22 ms for 32k tokens × 24 heads, at an H100's ≈ 3 TB/s copy rate."""
    roofline = tool_module("roofline")
    ms = roofline.roofline_ms(nbytes=roofline.scan_floor_bytes(32768, 24, 64, 1), bandwidth_gbs=3000)
    assert ms == pytest.approx(0.2144, abs=1e-4)


@pytest.mark.parametrize("arch,n_params,L,layers,flops", [
    ("cdssm", 7_464_984, 2048, 1, 6 * 7_464_984 * 32768),
    ("cdssm", 7_464_984, 32768, 1, 6 * 7_464_984 * 32768),  # no term in L
    ("transformer", 7_079_424, 2048, 1, 6 * 7_079_424 * 32768 + 6 * 2048 * 768 * 32768),
    ("transformer", 7_079_424, 32768, 1, 6 * 7_079_424 * 32768 + 6 * 32768 * 768 * 32768),
    # the 12-layer LM's MFU: 6 N per token plus 12·n·L·d / 2 of causal attention
    ("transformer", 124_000_000, 2048, 12, (6 * 124_000_000 + 12 * 12 * 2048 * 768 // 2) * 32768),
    ("cdssm", 128_177_952, 2048, 12, 6 * 128_177_952 * 32768),
])
def test_model_flops(arch, n_params, L, layers, flops, tool_module):
    assert tool_module("roofline").model_flops(arch, n_params, L, 768, 32768, layers) == flops


@pytest.mark.parametrize("kwargs,ms", [
    (dict(flops=758e12, peak_tflops=758), 1000.0),
    (dict(nbytes=3e9, bandwidth_gbs=3000), 1.0),
    (dict(flops=1.5e12, peak_tflops=750, nbytes=6e8, bandwidth_gbs=3000), 2.2),
    (dict(), 0.0),
])
def test_roofline_ms(kwargs, ms, tool_module):
    assert tool_module("roofline").roofline_ms(**kwargs) == pytest.approx(ms)


@pytest.mark.parametrize("kwargs,message", [
    (dict(flops=1e12), "peak_tflops: must be > 0"),
    (dict(nbytes=1e9, bandwidth_gbs=-1), "bandwidth_gbs: must be > 0"),
])
def test_roofline_ms_needs_a_rate(kwargs, message, tool_module):
    with pytest.raises(ValueError, match=message):
        tool_module("roofline").roofline_ms(**kwargs)


@pytest.mark.parametrize("arch,L,expected_ms", [
    # docs/benchmarks.md, Round 8: 3175 ktok/s at 20.9 % of the roofline (peak 758, floor 0.22 ms)
    ("cdssm", 2048, 6 * 7_464_984 * 32768 / 758e9 + 818 * 32768 * 24 / 3000e6),
    ("transformer", 2048, (6 * 7_079_424 + 6 * 2048 * 768) * 32768 / 758e9),
    ("gdn", 2048, None),
])
def test_block_roofline(arch, L, expected_ms, tool_module):
    """bench_gpu's block rooflines count the blocks' parameters on the meta device."""
    got = tool_module("bench_gpu").block_roofline_ms(arch, L, 32768, 758, 3000)
    assert got == (None if expected_ms is None else pytest.approx(expected_ms))
