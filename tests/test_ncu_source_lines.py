"""tools/ncu_source_lines.py: ncu's per-instruction counters summed by source line."""

import pytest

DISASM = """\
\t.section\t.text._Z5otherv,"ax",@progbits
\t//## File "/x/chunk_delta_scan.cuh", line 9
        /*0000*/                   NOP ;
\t.section\t.text._Z6kernelv,"ax",@progbits
\t//## File "/x/chunk_delta_scan.cuh", line 20
        /*0000*/                   LDC R1, c[0x0][0x28] ;
\t//## File "/x/mma_tile.cuh", line 54 inlined at "/x/chunk_delta_scan.cuh", line 300
\t//## File "/x/chunk_delta_scan.cuh", line 300 inlined at "/x/chunk_delta_scan.cuh", line 21
\t//## File "/x/chunk_delta_scan.cuh", line 21
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0020*/              @!P0 BAR.SYNC.DEFER_BLOCKING 0x0 ;
\t.section\t.text._Z5thirdv,"ax",@progbits
\t//## File "/x/chunk_delta_scan.cuh", line 1
        /*0000*/                   EXIT ;
"""

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Instructions Executed",
          "L1 Wavefronts Shared Excessive", "stall_barrier", "stall_short_sb", "stall_wait",
          "stall_long_sb", "stall_mio", "stall_no_inst"]
# (offset, source, samples, executed, excess wavefronts, barrier stalls)
ROWS = [(0x00, "LDC R1, c[0x0][0x28]", 10, 100, 0, 0),
        (0x10, "HMMA.16816.F32.BF16 R4, R8, R12, R4", 30, 50, 4, 0),
        (0x20, "@!P0 BAR.SYNC.DEFER_BLOCKING 0x0", 60, 50, 0, 60)]


def _files(tmp_path):
    disasm = tmp_path / "dis.txt"
    disasm.write_text(DISASM)
    sass = tmp_path / "sass.csv"
    lines = ['"Kernel Name","kernel()"', ",".join(f'"{h}"' for h in HEADER)]
    for off, src, samples, executed, excess, barrier in ROWS:
        values = [hex(0x7F0000 + off), src, samples, executed, excess, barrier, 0, 0, 0, 0, 0]
        lines.append(",".join(f'"{v}"' for v in values))
    sass.write_text("\n".join(lines) + "\n")
    return str(sass), str(disasm)


def test_counters_go_to_the_innermost_line_and_the_body_call_site(tmp_path, tool_module):
    tool = tool_module("ncu_source_lines")
    sass, disasm = _files(tmp_path)
    table = tool.line_table(disasm, "_Z6kernelv")
    assert table == {0x00: [("chunk_delta_scan.cuh", 20)],
                     0x10: [("mma_tile.cuh", 54), ("chunk_delta_scan.cuh", 300), ("chunk_delta_scan.cuh", 21)],
                     0x20: [("mma_tile.cuh", 54), ("chunk_delta_scan.cuh", 300), ("chunk_delta_scan.cuh", 21)]}
    header, rows = tool.read_sass(sass)
    _, by_inner, by_body, totals, opcodes = tool.aggregate(header, rows, table, (15, 25))
    assert totals[tool.SAMPLES] == 100 and totals[tool.EXECUTED] == 200
    assert by_inner["mma_tile.cuh:54"][tool.SAMPLES] == 90
    assert by_inner["chunk_delta_scan.cuh:20"][tool.EXECUTED] == 100
    assert by_body[21]["stall_barrier"] == 60 and by_body[21][tool.EXCESS] == 4
    assert by_body[20][tool.SAMPLES] == 10
    assert opcodes == {"LDC": 100, "HMMA": 50, "BAR": 50}  # the predicate is not the opcode


def test_unknown_function_and_foreign_csv_are_clear_errors(tmp_path, tool_module):
    tool = tool_module("ncu_source_lines")
    _, disasm = _files(tmp_path)
    with pytest.raises(SystemExit, match="--function: no .text section"):
        tool.line_table(disasm, "_Z7missingv")
    with pytest.raises(SystemExit, match="no 'Address' header row"):
        tool.read_sass(disasm)


def test_main_prints_both_tables(tmp_path, capsys, monkeypatch, tool_module):
    tool = tool_module("ncu_source_lines")
    sass, disasm = _files(tmp_path)
    monkeypatch.setattr("sys.argv", ["ncu_source_lines.py", sass, disasm, "--function", "_Z6kernelv",
                                     "--body", "15", "25"])
    tool.main()
    out = capsys.readouterr().out
    assert "3 instructions, 0 M warp instructions executed, 100 stall samples" in out
    assert "by call site in lines 15-25" in out and "mma_tile.cuh:54" in out
    assert "barrier 60.0 %" in out
