"""Where a CUDA kernel's time goes, by source line: ncu's per-SASS-instruction counters summed over
the source lines that nvdisasm's line table gives each instruction.

ncu's own CUDA-source view (`--print-source cuda`) comes back without metrics for our kernels,
so this joins its SASS view with the cubin's line table instead. On the GPU machine, after a build:

    cd tools && ncu --clock-control none --set full --import-source yes \\
        -k regex:chunk_bwd_kernel -c 1 -o /tmp/bwd python3 profile_scan_gpu.py --l2-rows
    ncu --import /tmp/bwd.ncu-rep --page source --csv --print-source sass > /tmp/bwd_sass.csv
    cd /tmp && cuobjdump -xelf all $REPO/cdssm/_C*.so        # one cubin per .cu file
    nvdisasm -gi /tmp/chunk_delta_scan_cuda.sm_90.cubin > /tmp/bwd_dis.txt

then, anywhere (the two text files travel):

    python3 tools/ncu_source_lines.py /tmp/bwd_sass.csv /tmp/bwd_dis.txt \\
        --function 'chunk_bwd_kernelI13__nv_bfloat16fLb1ELi64ELi64E' --body 1337 1610

Each instruction is charged to its innermost source line, and (with --body FIRST LAST) to the
first line of its inlining chain inside that range of chunk_delta_scan.cuh (the kernel body's own
statements). Prints, per line, the share of all stall samples, of executed warp instructions
and of excess shared-memory wavefronts (bank conflicts), and the main stall reasons as shares of
all samples; then the executed opcode mix.
"""

import argparse
import collections
import csv
import re

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
EXCESS = "L1 Wavefronts Shared Excessive"
STALLS = ("stall_barrier", "stall_short_sb", "stall_wait", "stall_long_sb", "stall_mio", "stall_no_inst")
FILE_LINE = re.compile(r'\s*//## File "[^"]*/([^"/]+)", line (\d+)')
INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*)")


def line_table(disasm_path, function):
    """{offset: [(file, line), ...] innermost first} for the one function whose mangled name
    contains `function` (the first such .text section of the nvdisasm -gi listing)."""
    table, chain, fresh, inside = {}, [], True, False
    with open(disasm_path) as f:
        for text in f:
            if text.lstrip().startswith(".section"):
                if inside:
                    break
                inside = ".text." in text and function in text
                continue
            if not inside:
                continue
            m = FILE_LINE.match(text)
            if m:
                if fresh:
                    chain, fresh = [], False
                chain.append((m.group(1), int(m.group(2))))
                continue
            m = INSTRUCTION.match(text)
            if m:
                table[int(m.group(1), 16)] = list(chain)
                fresh = True
    if not table:
        raise SystemExit(f"--function: no .text section of {disasm_path} matches {function!r}")
    return table


def read_sass(csv_path):
    """(header, rows) of ncu's --page source --csv --print-source sass export (one kernel)."""
    with open(csv_path) as f:
        rows = list(csv.reader(f))
    header_at = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if header_at is None:
        raise SystemExit(f"{csv_path}: no 'Address' header row (not an ncu SASS source export?)")
    return rows[header_at], [r for r in rows[header_at + 1:] if r and r[0].startswith("0x")]


def aggregate(header, rows, table, body):
    """Counters summed per innermost line and per body line, their totals, and the opcode mix."""
    col = {h: i for i, h in enumerate(header)}
    keys = [k for k in (SAMPLES, EXECUTED, EXCESS, *STALLS) if k in col]
    by_inner = collections.defaultdict(collections.Counter)
    by_body = collections.defaultdict(collections.Counter)
    totals, opcodes = collections.Counter(), collections.Counter()
    base = int(rows[0][0], 16)
    chain = []
    for r in rows:
        chain = table.get(int(r[0], 16) - base, chain)  # an unlisted offset keeps the previous line
        inner = "%s:%d" % chain[0] if chain else "?"
        outer = next((n for f, n in chain if body and f == "chunk_delta_scan.cuh" and body[0] <= n <= body[1]),
                     "outside")
        values = {k: float(r[col[k]] or 0) for k in keys}
        words = r[col["Source"]].split()
        if words and words[0].startswith("@"):
            words = words[1:]
        if words:
            opcodes[words[0].split(".")[0]] += values.get(EXECUTED, 0)
        for k, v in values.items():
            by_inner[inner][k] += v
            totals[k] += v
            if body:
                by_body[outer][k] += v
    return keys, by_inner, by_body, totals, opcodes


def table_text(title, groups, totals, keys, top):
    share = lambda c, k: 100 * c[k] / totals[k] if totals[k] else 0.0
    stalls = [k for k in STALLS if k in keys]
    head = f"{'line':>28} {'samples%':>8} {'instr%':>7} {'excessWF%':>9} " + " ".join(f"{k[6:]:>8}" for k in stalls)
    out = [f"\n{title} (stall reasons as % of all samples)", head]
    for name, c in sorted(groups.items(), key=lambda kv: -kv[1][SAMPLES])[:top]:
        out.append(f"{str(name):>28} {share(c, SAMPLES):8.1f} {share(c, EXECUTED):7.1f} {share(c, EXCESS):9.1f} "
                   + " ".join(f"{100 * c[k] / totals[SAMPLES]:8.1f}" for k in stalls))
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sass_csv", help="ncu --page source --csv --print-source sass export of one kernel")
    parser.add_argument("disasm", help="nvdisasm -gi listing of the cubin that holds the kernel")
    parser.add_argument("--function", required=True, help="a substring of the kernel's mangled name")
    parser.add_argument("--body", type=int, nargs=2, metavar=("FIRST", "LAST"),
                        help="also charge each instruction to its call site in these lines of chunk_delta_scan.cuh")
    parser.add_argument("--top", type=int, default=25, help="lines to print per table (default 25)")
    args = parser.parse_args()
    header, rows = read_sass(args.sass_csv)
    if SAMPLES not in header or EXECUTED not in header:
        raise SystemExit(f"{args.sass_csv}: needs the '{SAMPLES}' and '{EXECUTED}' columns (ncu --set full)")
    keys, by_inner, by_body, totals, opcodes = aggregate(header, rows, line_table(args.disasm, args.function), args.body)
    print(f"{len(rows)} instructions, {totals[EXECUTED] / 1e6:.0f} M warp instructions executed, "
          f"{int(totals[SAMPLES])} stall samples; stall reasons: "
          + ", ".join(f"{k[6:]} {100 * totals[k] / totals[SAMPLES]:.1f} %" for k in STALLS if k in keys))
    if args.body:
        print(table_text(f"by call site in lines {args.body[0]}-{args.body[1]}", by_body, totals, keys, args.top))
    print(table_text("by innermost source line", by_inner, totals, keys, args.top))
    print("\nexecuted opcodes (% of warp instructions): "
          + ", ".join(f"{op} {100 * n / totals[EXECUTED]:.1f}" for op, n in opcodes.most_common(16)))


if __name__ == "__main__":
    main()
