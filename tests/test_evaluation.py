"""``cdssm eval``: the task data generators, exact scoring, and a tiny run of every task."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from cdssm.cli import main
from cdssm.evaluation import mqar
from cdssm.evaluation.common import (ABLATIONS, labelled_predictions, merge_payloads,
                                     model_specs)
from cdssm.evaluation.extrapolation import buckets
from cdssm.evaluation.mqar import cells, check_cell, mqar_examples
from cdssm.evaluation.passkey import ASK, END, FIRST_FILLER, KEY, passkey_examples
from cdssm.models.outputs import CausalLMOutput
from train_data import write_shards

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("T, K, V", [(64, 4, 128), (256, 64, 512), (128, 32, 8192)])
def test_mqar_format(T, K, V):
    x, y = mqar_examples(np.random.default_rng(0), 16, T, K, V)
    assert x.shape == y.shape == (16, T) and x.dtype == y.dtype == np.int64
    assert ((x >= 0) & (x < V)).all()
    for row_x, row_y in zip(x, y):
        keys, values = row_x[0:2 * K:2], row_x[1:2 * K:2]
        assert len(set(keys)) == K and ((keys >= 1) & (keys < V // 2)).all()
        assert len(set(values)) == K and ((values >= V // 2) & (values < V)).all()
        asked = np.flatnonzero(row_y != -100)
        assert len(asked) == K and (asked > 2 * K).all() and ((asked - 2 * K) % 2 == 1).all()
        # the token before each answer is a key (the query); its answer is that key's value
        answer = dict(zip(keys, values))
        assert sorted(row_x[asked - 1]) == sorted(keys)
        assert all(answer[q] == a for q, a in zip(row_x[asked - 1], row_y[asked]))


@pytest.mark.parametrize("T, K, V, name", [(63, 4, 128, "seq_len"), (64, 17, 128, "num_pairs"),
                                           (64, 4, 64, "vocab_size")])
def test_mqar_rejects_bad_cells(T, K, V, name):
    with pytest.raises(ValueError, match=name):
        check_cell(T, K, V)


def test_mqar_cells_skip_too_many_pairs():
    assert cells([64, 256], [16, 64]) == [(64, 16), (256, 16), (256, 64)]


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_placement_and_answer(depth):
    T, K = 100, 5
    x, y, keys = passkey_examples(np.random.default_rng(1), 4, T, depth, K, 64)
    filler = T - 2 * K - 3
    start = int(np.rint(depth * filler))
    for row_x, row_y, key in zip(x, y, keys):
        assert row_x[start] == KEY and (row_x[start + 1:start + 1 + K] == key).all()
        assert row_x[start + 1 + K] == END
        assert row_x[-K - 1] == ASK and (row_x[-K:] == key).all()
        others = np.delete(row_x, list(range(start, start + K + 2)) + list(range(T - K - 1, T)))
        assert len(others) == filler and (others >= FIRST_FILLER).all()
        assert (row_y[-K:] == key).all() and (row_y[:-K] == -100).all()


class TableModel(nn.Module):
    """Predicts ``table[t]`` at position t (logits one-hot), for scoring tests."""

    def __init__(self, table, vocab):
        super().__init__()
        self.register_buffer("table", table)
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        logits = torch.nn.functional.one_hot(self.table[:, :input_ids.shape[1]], self.vocab)
        return CausalLMOutput(logits.float(), None, torch.zeros(()), None, None, None)


def test_labelled_predictions_are_exact():
    labels = torch.tensor([[-100, 5, -100, 7, 2], [-100, -100, 1, -100, -100]])
    # position t predicts labels[t + 1]: right at (0, 0), wrong at (0, 2), right at (0, 3),
    # right at (1, 1)
    table = torch.tensor([[5, 0, 6, 2, 0], [0, 1, 0, 0, 0]])
    correct, asked = labelled_predictions(TableModel(table, 8), torch.zeros(2, 5).long(),
                                          labels, "fp32")
    assert asked.tolist() == [[True, False, True, True, False], [False, True, False, False, False]]
    assert correct.tolist() == [[True, False, False, True, False],
                                [False, True, False, False, False]]


def test_rows_and_buckets():
    rows = model_specs(["cdssm", "transformer"], [1, 8], ["approx-scan"])
    assert [r.label for r in rows] == ["transformer", "cdssm-P1", "cdssm-P8",
                                       "cdssm-P1-approx-scan"]
    assert rows[-1].fields() == {"arch": "cdssm", "state_pairs": 1, **ABLATIONS["approx-scan"]}
    with pytest.raises(ValueError, match="ablation"):
        model_specs(["transformer"], [1], ["fixed-dt"])
    assert buckets(64, [2, 4]) == [(0, 64), (64, 128), (128, 256)]


TINY = ["--d-model", "64", "--n-layers", "1", "--steps", "3", "--batch-size", "2",
        "--state-pairs", "1", "--device", "cpu", "--no-progress"]


def _check_outputs(out_dir, task):
    payload = json.loads((out_dir / f"{task}.json").read_text())
    assert payload["task"] == task and payload["runs"]
    assert (out_dir / f"{task}.png").read_bytes()[:8] == PNG_MAGIC
    return payload


def test_mqar_command(tmp_path, capsys):
    out = tmp_path / "mqar"
    main(["eval", "mqar", "--seq-lens", "32", "--pairs", "4", "8", "--vocab-size", "64",
          "--test-examples", "4", "--ablation", "uniform-init", "--out-dir", str(out), *TINY])
    payload = _check_outputs(out, "mqar")
    assert {r["label"] for r in payload["runs"]} == {"transformer", "cdssm-P1",
                                                     "cdssm-P1-uniform-init"}
    assert all(r["queries"] == 4 * r["num_pairs"] and 0 <= r["accuracy"] <= 1
               for r in payload["results"])
    assert "T32/K8" in capsys.readouterr().out
    # a second run with the same settings loads the models instead of training them
    main(["eval", "mqar", "--seq-lens", "32", "--pairs", "4", "8", "--vocab-size", "64",
          "--test-examples", "4", "--out-dir", str(out), *TINY])
    assert not any(r["trained_now"] for r in _check_outputs(out, "mqar")["runs"])


def test_passkey_command(tmp_path):
    out = tmp_path / "passkey"
    main(["eval", "passkey", "--train-len", "48", "--train-min-len", "24", "--test-lens", "32",
          "96", "--depths", "0", "1", "--vocab-size", "32", "--test-examples", "2",
          "--out-dir", str(out), *TINY])
    payload = _check_outputs(out, "passkey")
    assert len(payload["results"]) == 2 * 2 * 2  # rows × lengths × depths
    assert all(r["examples"] == 2 for r in payload["results"])


def test_lm_and_extrapolation_commands(tmp_path):
    data = write_shards(tmp_path / "data", train_tokens=4000, val_tokens=1200)
    out = tmp_path / "lm"
    common = ["--data-dir", data, "--seq-len", "32", "--eval-every", "2", "--eval-batches", "1",
              "--out-dir", str(out), *TINY]
    main(["eval", "lm", *common])
    lm = _check_outputs(out, "lm")
    assert all(r["tokens"] == 3 * 2 * 32 and r["val_curve"] for r in lm["runs"])
    main(["eval", "extrapolation", "--factors", "2", "4", "--windows", "2", *common])
    ex = _check_outputs(out, "extrapolation")
    assert not any(r["trained_now"] for r in ex["runs"])  # the lm task's runs, loaded
    assert ex["window_len"] == 128 and all(len(r["bucket_loss"]) == 3 for r in ex["results"])


def test_rows_trained_apart_merge_into_the_all_rows_result(tmp_path):
    grid = ["--seq-lens", "32", "--pairs", "4", "--vocab-size", "64", "--test-examples", "4",
            *TINY]
    main(["eval", "mqar", *grid, "--arch", "transformer", "--out-dir", str(tmp_path / "a")])
    main(["eval", "mqar", *grid, "--arch", "cdssm", "--out-dir", str(tmp_path / "b")])
    parts = [_check_outputs(tmp_path / name, "mqar") for name in "ab"]
    merged = merge_payloads(parts)
    main(["eval", "mqar", *grid, "--out-dir", str(tmp_path / "a")])  # both rows in one run
    together = _check_outputs(tmp_path / "a", "mqar")
    assert merged["results"] == together["results"]
    assert mqar.table(merged) == mqar.table(together)
    assert [s["args"]["arch"] for s in merged["sources"]] == [["transformer"], ["cdssm"]]
    mqar.plot(merged, str(tmp_path / "merged.png"))
    assert (tmp_path / "merged.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(task="passkey"), "one task"),
    (lambda p: p.update(cells=[[64, 4]]), "'cells' differs"),
    (lambda p: p["args"].update(steps=7), "options steps differ"),
    (lambda p: p["runs"][0].update(label="a"), "appear more than once"),
])
def test_merge_rejects_runs_that_differ_in_more_than_rows(change, message):
    def payload(label):
        return {"task": "mqar", "cells": [[32, 4]], "environment": {},
                "args": {"steps": 3, "arch": [label]},
                "runs": [{"label": label, "d_model": 64}], "results": []}

    first, second = payload("a"), payload("b")
    merge_payloads([first, second])  # rows differ only: fine
    change(second)
    with pytest.raises(ValueError, match=message):
        merge_payloads([first, second])


MQAR_TINY = ["mqar", "--seq-lens", "32", "--pairs", "4", "--vocab-size", "64",
             "--test-examples", "2"]
PASSKEY_TINY = ["passkey", "--train-len", "48", "--train-min-len", "24", "--test-lens", "32",
                "--depths", "0", "--vocab-size", "32", "--test-examples", "1"]


@pytest.mark.parametrize("task, other", [
    (MQAR_TINY, ["--pairs", "2"]),  # same TrainConfig, other training examples
    (MQAR_TINY, ["--vocab-size", "80"]),
    (PASSKEY_TINY, ["--train-min-len", "30"]),
    (PASSKEY_TINY, ["--digits", "3"]),
])
def test_a_run_trained_on_other_examples_is_not_loaded(tmp_path, task, other):
    out = tmp_path / "out"
    tiny = [*TINY, "--arch", "cdssm", "--out-dir", str(out)]
    main(["eval", *task, *tiny])
    main(["eval", *task, *other, *tiny])
    assert all(r["trained_now"] for r in _check_outputs(out, task[0])["runs"])
    main(["eval", *task, *tiny])  # the first run's settings again: its model is loaded
    assert not any(r["trained_now"] for r in _check_outputs(out, task[0])["runs"])


def test_eval_no_phase_runs_the_task_with_every_phase_zero(tmp_path, monkeypatch, tool_module):
    """tools/eval_no_phase.py: the scan sees φ = 0 and the specified decay; the task runs."""
    import cdssm.models.cdssm as cdssm_model

    tool = tool_module("eval_no_phase")
    monkeypatch.setattr(cdssm_model, "scan_inputs", cdssm_model.scan_inputs)  # restored after
    seen, scan = [], cdssm_model.chunk_delta_scan

    def spy(q, k, v, beta, log_decay, phase, *args, **kwargs):
        seen.append((log_decay.detach().clone(), phase.detach().clone()))
        return scan(q, k, v, beta, log_decay, phase, *args, **kwargs)

    monkeypatch.setattr(cdssm_model, "chunk_delta_scan", spy)
    assert tool.main(["mqar", "--seq-lens", "32", "--pairs", "4", "--vocab-size", "64",
                      "--test-examples", "4", "--arch", "cdssm", "--out-dir", str(tmp_path),
                      *TINY]) == 0
    assert seen and all(bool((phase == 0).all()) for _, phase in seen)
    assert any(bool((log_decay < 0).any()) for log_decay, _ in seen)  # the decay is kept
    assert json.loads((tmp_path / "mqar.json").read_text())["results"]


def test_scan_inputs_without_phase_keeps_decay_and_value_scale(tool_module):
    from cdssm.ops.dynamics import scan_inputs

    tool = tool_module("eval_no_phase")
    g = torch.Generator().manual_seed(0)
    alpha, omega = torch.rand(3, 2, 4, generator=g), 3 * torch.randn(3, 2, 4, generator=g)
    dt, r = torch.rand(3, 2, 4, generator=g), torch.rand(3, 2, 1, generator=g)
    want, got = scan_inputs(alpha, omega, dt, r, 0.5), tool.scan_inputs_without_phase(alpha, omega, dt, r, 0.5)
    assert want.phase.abs().max() > 0 and (got.phase == 0).all()
    torch.testing.assert_close(got.log_decay, want.log_decay, rtol=0, atol=0)
    torch.testing.assert_close(got.value_scale, want.value_scale, rtol=0, atol=0)
