"""``cdssm eval TASK``: train (or load) CD-SSM and Transformer rows and measure them.

One module per task — ``mqar`` (multi-query associative recall), ``passkey`` (retrieval at depth
× length), ``extrapolation`` (val loss by position past the training context), ``lm`` (val loss
at equal tokens) — each with ``add_arguments(parser)`` and ``run(args)``, which prints a table and
writes OUT/TASK.json and OUT/TASK.png. ``common`` holds the rows (incl. the ablation switches),
the shared options, training through ``cdssm.training`` and the outputs.
"""

TASKS = {
    "mqar": "multi-query associative recall (Zoology): accuracy vs width, pairs, length",
    "passkey": "passkey retrieval: accuracy by depth × context length (heatmap)",
    "extrapolation": "val loss by position up to 16× the training context",
    "lm": "language modelling at equal tokens: val loss, parameters, loss curves",
}
