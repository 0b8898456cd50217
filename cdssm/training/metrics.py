"""The run's metrics log: one JSON object per line in ``RUN_DIR/metrics.jsonl``.

Training lines: {"step", "loss", "aux_loss", "lr", "grad_norm", "tokens", "tokens_per_s",
"model_tflops", "elapsed_s"} (model_tflops: ``cdssm.training.flops`` FLOPs per token × tokens/s),
plus "peak_mem_gib" on CUDA (the peak of allocated memory so far); evaluation lines: {"step",
"val_loss", "val_ppl"} (val_ppl = exp(val_loss)).
"""

import json
import os

METRICS_NAME = "metrics.jsonl"


def metrics_path(run_dir: str) -> str:
    return os.path.join(run_dir, METRICS_NAME)


def read_metrics(run_dir: str) -> list:
    """Every record of the run's log, in order."""
    path = metrics_path(run_dir)
    if not os.path.isfile(path):
        raise ValueError(f"run_dir: no {METRICS_NAME} in {run_dir!r} (is it a training run "
                         f"directory?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """Appends records to ``RUN_DIR/metrics.jsonl``. ``resume_step``: keep only the records of
    steps ≤ it (a resumed run rewrites what came after its checkpoint); None starts afresh."""

    def __init__(self, run_dir: str, resume_step=None):
        os.makedirs(run_dir, exist_ok=True)
        self.path = metrics_path(run_dir)
        kept = []
        if resume_step is not None and os.path.isfile(self.path):
            kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
