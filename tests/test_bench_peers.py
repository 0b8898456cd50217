"""--peers of tools/bench_scan_gpu.py and tools/bench_gpu.py (fla's Gated DeltaNet beside our rows,
tools/peers.py): argument errors, tables from synthetic rows, the pinned wheels; on a GPU with fla
installed, the peer scan and block themselves."""

import re
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("tool,argv,message", [
    ("bench_scan_gpu", ["--peers"], "--peers: needs flash-linear-attention 0.6.0 (fla) to import "
                                    "fla.ops.gated_delta_rule"),
    ("bench_scan_gpu", ["--peers", "--l2-rows"], "--peers: needs flash-linear-attention"),
    ("bench_gpu", ["--peers", "--no-lm"], "--peers: needs flash-linear-attention 0.6.0 (fla) to "
                                          "import fla.layers"),
    ("bench_gpu", ["--peers", "--no-block"], "--peers: the peer is a block row"),
])
def test_peers_argument_errors(tool, argv, message, tool_module, monkeypatch, capsys):
    for name in ("fla", "fla.layers", "fla.ops.gated_delta_rule"):  # None: the import fails
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SystemExit) as exit_:
        tool_module(tool).main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err
    if "needs flash-linear-attention" in message:
        assert "tools/fetch_peer_wheels.sh" in err
        assert "python3 -m pip install --no-deps --no-index .whl/*.whl" in err


@pytest.mark.parametrize("tool", ["bench_scan_gpu", "bench_gpu"])
def test_help_explains_peers(tool, tool_module, capsys):
    with pytest.raises(SystemExit) as exit_:
        tool_module(tool).main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "--peers" in out and "fetch_peer_wheels.sh" in out and "fla" in out


OURS = [dict(arch="cdssm", L=2048, B=16, ms=30.0, ktok_per_s=1092.3, peak_mib=1510.4, mfu=0.4123,
             roofline_fraction=0.2211),
        dict(arch="transformer", L=2048, B=16, ms=40.0, ktok_per_s=819.2, peak_mib=2047.6, mfu=0.3,
             roofline_fraction=0.4706),
        dict(arch="cdssm", L=8192, B=4, oom=True),
        dict(arch="transformer", L=8192, B=4, ms=50.0, ktok_per_s=655.4, peak_mib=3000.0, mfu=0.2,
             roofline_fraction=0.48)]
GDN = [dict(arch="gdn", L=2048, B=16, ms=35.0, ktok_per_s=936.2, peak_mib=2600.2,
            mode="eager (Unsupported: x)"),
       dict(arch="gdn", L=8192, B=4, ms=60.0, ktok_per_s=546.1, peak_mib=4100.0, mode="compiled")]
HEADER = "     L  CD-SSM ktok/s  Transf. ktok/s  ratio  CD-SSM MiB  Transf. MiB"
ROW_2048 = "  2048           1092             819   1.33        1510         2048"
ROW_8192 = "  8192            OOM             655      -         OOM         3000"


@pytest.mark.parametrize("rows,fraction,expected", [
    (OURS, None, [HEADER, ROW_2048, ROW_8192]),  # as before --peers existed
    (OURS, "mfu", [HEADER + "   MFU(CD)   MFU(Tf)", ROW_2048 + "     0.412     0.300",
                   ROW_8192 + "       OOM     0.200"]),
    (OURS, "roofline_fraction", [HEADER + "  roof(CD)  roof(Tf)", ROW_2048 + "     0.221     0.471",
                                 ROW_8192 + "       OOM     0.480"]),
    (OURS + GDN, None, [HEADER + "  GDN ktok/s  CD/GDN  GDN MiB",
                        ROW_2048 + "         936    1.17     2600",
                        ROW_8192 + "         546       -     4100",
                        "GDN block at L 2048: eager (Unsupported: x)",
                        "GDN block at L 8192: compiled"]),
    (OURS + [GDN[0], dict(arch="gdn", L=8192, B=4, oom=True)], "roofline_fraction",
     [HEADER + "  roof(CD)  roof(Tf)  GDN ktok/s  CD/GDN  GDN MiB",
      ROW_2048 + "     0.221     0.471         936    1.17     2600",
      ROW_8192 + "       OOM     0.480         OOM       -      OOM", "GDN block at L 2048: eager (Unsupported: x)"]),
])
def test_block_table(rows, fraction, expected, tool_module):
    assert tool_module("bench_gpu").table_lines(rows, [2048, 8192], fraction) == expected


def test_scan_peer_lines(tool_module):
    tool = tool_module("bench_scan_gpu")
    ours = [dict(B=16, T=2048, P=1, fwd_ms=0.5, fwd_bwd_ms=1.5),
            dict(B=16, T=2048, P=8, fwd_ms=1.0, fwd_bwd_ms=4.5)]
    fla = dict(B=16, T=2048, fwd_ms=1.0, fwd_bwd_ms=3.0)
    lines = tool.peer_lines(ours, fla)
    assert [line.split() for line in lines] == [
        ["16", "2048", "1", "0.500", "1.000", "0.50", "1.500", "3.000", "0.50"],
        ["16", "2048", "8", "1.000", "1.000", "1.00", "4.500", "3.000", "1.50"]]
    assert {len(line) for line in lines} == {len(tool.PEER_HEADER)}


@pytest.mark.parametrize("error,built,how", [
    (None, [True], "compiled"),
    (RuntimeError("Dynamo failed\nat a Triton kernel"), [True, False],
     "eager (RuntimeError: Dynamo failed)"),
])
def test_compiled_or_eager(error, built, how, tool_module):
    calls = []

    def make_step(compiled):
        calls.append(compiled)

        def step():
            if compiled and error is not None:
                raise error
        return step

    step, got = tool_module("peers").compiled_or_eager(make_step)
    step()
    assert (calls, got) == (built, how)


def test_out_of_memory_is_not_a_compile_failure(tool_module):
    def make_step(compiled):
        def step():
            raise torch.OutOfMemoryError("CUDA out of memory")
        return step

    with pytest.raises(torch.OutOfMemoryError):
        tool_module("peers").compiled_or_eager(make_step)


def test_fetch_script_pins_the_three_wheels():
    script = (ROOT / "tools" / "fetch_peer_wheels.sh").read_text()
    pins = re.search(r"^WHEELS=\((.*)\)$", script, re.M).group(1).split()
    assert pins == ["fla-core==0.6.0", "flash-linear-attention==0.6.0", "einops==0.8.2"]
    assert "pip download --no-deps" in script and "-d .whl" in script
    assert "/.whl/" in (ROOT / ".gitignore").read_text().split()


def test_gdn_block_parameters(tool_module):
    pytest.importorskip("fla.layers")
    from cdssm.models.transformer import TransformerConfig

    block = tool_module("peers").GatedDeltaNetBlock(TransformerConfig(768, 12, 2048, 50257))
    layer = block.attn
    assert (layer.num_heads, layer.head_k_dim, layer.head_v_dim) == (7, 64, 128)
    assert sum(p.numel() for p in layer.parameters()) == 2_770_574
    assert sum(p.numel() for p in block.parameters()) == 7_490_702
    assert {layer.q_conv1d.backend, layer.k_conv1d.backend, layer.v_conv1d.backend} == {"triton"}


@pytest.mark.parametrize("B,T,H,D,P,initial", [(2, 100, 3, 16, 4, True), (1, 70, 2, 8, 1, False)])
def test_fla_recurrence_is_ours_at_phase_zero(B, T, H, D, P, initial):
    """The peer's recurrence (fla's naive reference) with V = 2P and states (V, K) is
    chunk_delta_scan's at phase 0 with one log-decay for all pairs (float64 inputs; fla's
    reference computes in float32)."""
    pytest.importorskip("fla.ops.gated_delta_rule")
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    from cdssm.ops import chunk_delta_scan

    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)
    q, k = (torch.nn.functional.normalize(torch.randn(B, T, H, D, **f64), dim=-1) for _ in range(2))
    v, beta = torch.randn(B, T, H, P, 2, **f64), torch.rand(B, T, H, **f64)
    g = -0.1 * torch.rand(B, T, H, **f64)
    s0 = torch.randn(B, H, 2 * P, D, **f64) if initial else None
    o, final = chunk_delta_scan(q, k, v, beta, g[..., None].expand(B, T, H, P).contiguous(),
                                torch.zeros(B, T, H, P, **f64), s0, output_final_state=True)
    o_fla, final_fla = naive_recurrent_gated_delta_rule(
        q, k, v.reshape(B, T, H, 2 * P), beta, g, scale=1.0,
        initial_state=None if s0 is None else s0.transpose(-1, -2), output_final_state=True)
    torch.testing.assert_close(o.reshape(B, T, H, 2 * P), o_fla.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final, final_fla.transpose(-1, -2).double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("B,T,H,K,V,l2_rows", [(2, 200, 3, 64, 64, False), (1, 64, 2, 64, 128, True)])
@pytest.mark.cuda
@NEEDS_GPU
def test_fla_scan_peer(B, T, H, K, V, l2_rows, tool_module):
    pytest.importorskip("fla.ops.gated_delta_rule")
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    peers = tool_module("peers")
    inputs = peers.fla_scan_inputs(B, T, H, K, V, torch.bfloat16, l2_rows)
    o, final = chunk_gated_delta_rule(**inputs, **peers.fla_scan_options(l2_rows))
    assert o.shape == (B, T, H, V) and o.dtype == torch.bfloat16
    assert final.shape == (B, H, V, K) and final.dtype == torch.float32
    if l2_rows:  # the in-kernel normalisation is the unit-rows call on normalised rows
        unit = {name: torch.nn.functional.normalize(inputs[name].float(), dim=-1).to(torch.bfloat16)
                for name in ("q", "k")}
        o_unit, _ = chunk_gated_delta_rule(**{**inputs, **unit}, **peers.fla_scan_options(False))
        torch.testing.assert_close(o, o_unit, atol=3e-2, rtol=3e-2)
    peers.lift_triton_guard()  # the backward's guard on the GPU machine's Triton 3.6 (timing only)
    fwd, step = peers.fla_scan_steps(B, T, H, K, V, torch.bfloat16, l2_rows)
    fwd()
    step()


@pytest.mark.cuda
@NEEDS_GPU
def test_gdn_block_step_runs(tool_module):
    pytest.importorskip("fla.layers")
    bench_gpu, peers = tool_module("bench_gpu"), tool_module("peers")
    peers.lift_triton_guard()
    forward, grad = bench_gpu.block_forward_bf16("gdn", 256, 2, compiled=False)
    y = forward()
    assert y.shape == (2, 256, 768) and y.dtype == torch.bfloat16
    y.backward(grad)
    step, how = peers.compiled_or_eager(lambda compiled: bench_gpu.block_step("gdn", 256, 2, True, compiled))
    step()
    assert how == "compiled" or how.startswith("eager (")


@pytest.mark.parametrize("hopper,above_3_4,above_3_7_1,lifted", [
    (True, True, False, True),    # the guarded range: Hopper, Triton 3.4 <= v < 3.7.1
    (True, True, True, False),    # Triton 3.7.1 or later: no guard
    (True, False, False, False),  # Triton before 3.4: no guard
    (False, True, False, False),  # not Hopper: no guard
])
def test_lift_triton_guard(hopper, above_3_4, above_3_7_1, lifted, tool_module, monkeypatch):
    """The guard of fla's gated backward is lifted (and the rows get a note) exactly where fla
    0.6.0 raises it; elsewhere nothing changes."""
    chunk_o = types.SimpleNamespace(IS_NVIDIA_HOPPER=hopper, TRITON_ABOVE_3_4_0=above_3_4,
                                    TRITON_ABOVE_3_7_1=above_3_7_1)
    monkeypatch.setitem(sys.modules, "fla.ops.common.chunk_o", chunk_o)
    note = tool_module("peers").lift_triton_guard()
    assert (note is not None) == lifted
    assert chunk_o.TRITON_ABOVE_3_7_1 == (above_3_7_1 or lifted)
    if lifted:
        assert "timing only" in note and "#640" in note
