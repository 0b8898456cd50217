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


@pytest.mark.parametrize("D,P,nbytes", [
    (64, 1, 64 * 64 * 4 + 64 * 8 + 16),  # Γ_{n−1}'s 8 bytes take a whole granule
    (16, 3, 16 * 16 * 4 + 3 * 16 * 8 + 32),
    (8, 1, 8 * 8 * 4 + 64 + 16),
])
def test_map_record_bytes(D, P, nbytes, tool_module):
    assert tool_module("roofline").map_record_bytes(D, P) == nbytes


# The chunk kernels' bytes per (chunk, head) at C = D = 64, P = 1, counted from their loads and
# stores in csrc/cuda/chunk_delta_scan.cuh (rows of q or k: 8192; fp32 decay of a chunk: 512;
# β: 128; complex bf16 v, o or dy: 256; fp32 state: 512; W: 16384; u_loc: 512; map record: 16912).
DESIGN_64 = {"chunk_prepare": 8192 + 512 + 128 + 256 + 16384 + 512 + 16912,
             "state_chain": 16912 + 512, "segment_maps": 16912,
             "chunk_output": 2 * 8192 + 512 + 512 + 16384 + 512 + 256,
             "bwd_local": 2 * 8192 + 512 + 128 + 256 + 16912,
             "chunk_bwd": 4 * 8192 + 2 * 512 + 2 * 128 + 3 * 256 + 2 * 512}


@pytest.mark.parametrize("l2_rows,extra", [(False, 0), (True, 6 * 8192)])
def test_chunk_kernel_bytes(l2_rows, extra, tool_module):
    expected = {**DESIGN_64, "chunk_bwd": DESIGN_64["chunk_bwd"] + extra}
    assert tool_module("roofline").chunk_kernel_bytes(64, 64, 1, l2_rows) == expected


@pytest.mark.parametrize("C,D,P,l2_rows", [(64, 64, 1, False), (64, 64, 8, True), (32, 16, 2, False),
                                           (16, 128, 1, True)])
def test_design_moves_at_least_the_scans_bytes(C, D, P, l2_rows, tool_module):
    """One fwd+bwd of the design (prepare, the two chains, output, bwd_local, chunk_bwd) moves the
    scan's own bytes and more: its floor is never under the scan's."""
    roofline = tool_module("roofline")
    per = roofline.chunk_kernel_bytes(C, D, P, l2_rows)
    design = per["chunk_prepare"] + 2 * per["state_chain"] + per["chunk_output"] + per["bwd_local"] + per["chunk_bwd"]
    assert design >= roofline.scan_floor_bytes(C, 1, D, P)


KERNELS = [  # (name, ms, launches) as torch.profiler named them on the H100 (B 1, T 32768)
    ("void cdssm::cuda::chunk_bwd_kernel<__nv_bfloat16, float, true, 64, 64>(cdssm::cuda::Inputs<__nv_bfloat16, float>)", 1.834, 1),
    ("void cdssm::cuda::segment_maps_kernel<__nv_bfloat16, float, true, true, 64>(cdssm::cuda::Sequences)", 0.149, 1),
    ("void cdssm::cuda::state_chain_kernel<float, false, true, 64>(cdssm::cuda::Sequences)", 0.090, 2),
    ("void at::native::elementwise_kernel<128, 2>(int, at::native::add_kernel)", 0.10, 4),
    ("void cdssm::cuda::segment_chain_kernel<float, true, true, 64>(cdssm::cuda::Sequences)", 0.029, 2),
]


def test_kernel_floors(tool_module):
    roofline = tool_module("roofline")
    rows = roofline.kernel_floors(KERNELS, DESIGN_64, 12288, 3000)
    floors = [floor for *_, floor in rows]
    assert [row[:3] for row in rows] == KERNELS
    assert floors[0] == pytest.approx(DESIGN_64["chunk_bwd"] * 12288 / 3e9)
    assert floors[1] == pytest.approx(DESIGN_64["segment_maps"] * 12288 / 3e9)
    assert floors[2] == pytest.approx(2 * DESIGN_64["state_chain"] * 12288 / 3e9)  # per launch
    assert floors[3] is None and floors[4] is None  # not a chunk kernel; the segment chain is not counted
