"""`cdssm eval ...` with every CD-SSM pair's rotation removed: a diagnostic, not a model option.

Each state pair is a complex number whose step multiplier is z_eff = |z|^{c·r}·e^{i·arg z}
(spec/model.md step 7), so a value written at s and read at t has turned by Σ arg z over
(s, t]. This runs the given `cdssm eval` command line with arg z forced to 0 in every layer (the
decay |z_eff| unchanged), to test docs/evaluation.md's candidate that the rotation is what keeps
CD-SSM from binding keys to values in MQAR. Compare its table with the same command under
`cdssm eval`.

Example: python tools/eval_no_phase.py mqar --seq-lens 64 --pairs 4 8 16 --vocab-size 128 \\
             --arch cdssm --state-pairs 8 --d-model 128 --steps 2000 --batch-size 256
"""

import sys

import cdssm.models.cdssm as cdssm_model
from cdssm.ops.dynamics import scan_inputs


def scan_inputs_without_phase(*args, **kwargs):
    """scan_inputs with phase = 0 (same log_decay and value_scale)."""
    decay = scan_inputs(*args, **kwargs)
    return decay._replace(phase=decay.phase.new_zeros(decay.phase.shape))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cdssm_model.scan_inputs = scan_inputs_without_phase
    print("eval_no_phase: arg z forced to 0 in every CD-SSM layer", flush=True)
    from cdssm.cli import main as cli_main
    return cli_main(["eval", *argv])


if __name__ == "__main__":
    sys.exit(main())
