"""The training loop on CPU: learning, exact resume, the NaN stop, atomic checkpoints, the run
directory and ``cdssm plot``."""

import json
import os

import pytest
import torch

import cdssm.models.cdssm as cdssm_model
from cdssm.cli import main
from cdssm.training.checkpoint import load_checkpoint, save_checkpoint
from cdssm.training.config import TrainConfig
from cdssm.training.loader import TokenLoader
from cdssm.training.loop import TrainingDiverged, train
from cdssm.training.metrics import read_metrics
from train_data import VOCAB, ShardLoader, write_shards

TINY = dict(d_model=64, n_layers=2, seq_len=64, batch_size=4, warmup_steps=2, lr=3e-3,
            eval_batches=4, log_every=1, device="cpu", compile=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data"))


def tiny(data_dir, out_dir, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_dir": data_dir, "out_dir": str(out_dir), **overrides})


@pytest.mark.parametrize("arch", ["cdssm", "transformer"])
def test_tiny_run_lowers_val_loss(data_dir, tmp_path, arch):
    config = tiny(data_dir, tmp_path, arch=arch, steps=20, eval_every=5, eval_batches=2)
    result = train(config, make_loader=ShardLoader, progress=False)
    vals = [v for _, v in result.val_losses]
    assert [s for s, _ in result.val_losses] == [5, 10, 15, 20]
    assert vals[-1] < 0.75 * vals[0] and vals[-1] < 0.75 * torch.log(torch.tensor(VOCAB))
    if arch == "cdssm":  # the state-energy EMA was updated once per step
        assert all(block.ema.abs().sum() > 0 for block in result.model.blocks)
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 21))
    assert {"loss", "aux_loss", "lr", "grad_norm", "tokens", "tokens_per_s",
            "model_tflops"} <= set(records[0])
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "config.json", "final",
                                            "metrics.jsonl"]
    from cdssm.models.registry import ARCHITECTURES

    final = ARCHITECTURES[arch].from_pretrained(str(tmp_path / "final"))
    for name, value in final.state_dict().items():
        torch.testing.assert_close(value, result.model.state_dict()[name], rtol=0, atol=0)


@pytest.mark.parametrize("arch, options", [
    ("cdssm", dict(activation_checkpointing=True)),
    ("transformer", dict(activation_checkpointing=True)),
    pytest.param("transformer", dict(compile=True), marks=pytest.mark.slow),
])
def test_checkpointed_or_compiled_run_matches_eager(data_dir, tmp_path, arch, options):
    run = dict(arch=arch, steps=3, eval_every=0, eval_batches=1)
    eager = train(tiny(data_dir, tmp_path / "eager", **run), make_loader=ShardLoader,
                  progress=False)
    other = train(tiny(data_dir, tmp_path / "other", **run, **options), make_loader=ShardLoader,
                  progress=False)
    torch.testing.assert_close(torch.tensor(other.losses), torch.tensor(eager.losses),
                               rtol=1e-5, atol=1e-5)
    saved = load_checkpoint(str(tmp_path / "other" / "checkpoint.pt"))
    assert saved["model"].keys() == eager.model.state_dict().keys()  # no wrapper prefixes


@pytest.mark.parametrize("arch", ["cdssm", "transformer"])
def test_packed_run_learns(data_dir, tmp_path, arch):
    config = tiny(data_dir, tmp_path, arch=arch, packed=True, steps=12, eval_every=6,
                  eval_batches=2)
    vals = [v for _, v in train(config, make_loader=ShardLoader, progress=False).val_losses]
    assert vals[-1] < vals[0] < 1.2 * torch.log(torch.tensor(VOCAB))


def crashing_loader(loader, crash_at: int):
    """A ``loader`` factory whose train loader raises instead of giving batch ``crash_at``."""

    class Crashing(loader):
        def next_batch(self):
            self.taken = getattr(self, "taken", 0) + 1
            if self.taken > crash_at:
                raise KeyboardInterrupt("simulated crash")
            return super().next_batch()

    return lambda data_dir, split, *args, **kw: (Crashing if split == "train" else loader)(
        data_dir, split, *args, **kw)


@pytest.mark.parametrize("grad_accum, loader", [(1, ShardLoader), (2, ShardLoader),
                                                (2, TokenLoader)])
def test_resume_reproduces_the_uninterrupted_run(data_dir, tmp_path, grad_accum, loader):
    overrides = dict(steps=8, checkpoint_every=4, eval_every=4, grad_accum=grad_accum)
    straight = train(tiny(data_dir, tmp_path / "straight", **overrides),
                     make_loader=loader, progress=False)
    config = tiny(data_dir, tmp_path / "resumed", **overrides)
    with pytest.raises(KeyboardInterrupt):  # dies during step 6, after the step-4 checkpoint
        train(config, make_loader=crashing_loader(loader, 5 * grad_accum), progress=False)
    assert load_checkpoint(str(tmp_path / "resumed" / "checkpoint.pt"))["step"] == 4
    resumed = train(config, resume=True, make_loader=loader, progress=False)
    assert resumed.losses == straight.losses[4:]
    assert resumed.val_losses == straight.val_losses[1:]
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # ema buffers included
    steps = [r["step"] for r in read_metrics(str(tmp_path / "resumed")) if "loss" in r]
    assert steps == list(range(1, 9))


def test_resume_refuses_a_different_model(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path, steps=1), make_loader=ShardLoader, progress=False)
    with pytest.raises(ValueError, match=r"resume: .*d_model \(64 → 128\)"):
        train(tiny(data_dir, tmp_path, steps=2, d_model=128), resume=True,
              make_loader=ShardLoader, progress=False)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(tiny(data_dir, tmp_path / "new", steps=2), resume=True, make_loader=ShardLoader)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch):
    calls = []
    loss = cdssm_model.chunked_causal_lm_loss

    def poisoned(*args, **kwargs):  # the loss of the 4th step is NaN
        calls.append(1)
        value = loss(*args, **kwargs)
        return value * float("nan") if len(calls) >= 4 else value

    monkeypatch.setattr(cdssm_model, "chunked_causal_lm_loss", poisoned)
    config = tiny(data_dir, tmp_path, steps=8, checkpoint_every=2, eval_every=0)
    with pytest.raises(TrainingDiverged, match=r"step 4: loss nan.*not finite.*checkpoint"):
        train(config, make_loader=ShardLoader, progress=False)
    saved = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not (tmp_path / "final").exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, {"step": 1, "w": torch.arange(4)})

    def failing_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(4)})
    monkeypatch.undo()
    saved = load_checkpoint(path)
    assert saved["step"] == 1 and torch.equal(saved["w"], torch.arange(4))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left


def test_cli_train_then_plot(data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(f"data_dir: {data_dir}\nd_model: 64\nn_layers: 1\nseq_len: 32\n")
    assert main(["train", "--preset", "tiny", "--config", str(config), "--steps", "6",
                 "--eval-every", "3", "--no-compile", "--out-dir", str(run_dir),
                 "--no-progress"]) == 0
    assert "final val loss" in capsys.readouterr().out
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["n_layers"], saved["steps"], saved["batch_size"]) == (1, 6, 8)
    assert main(["plot", str(run_dir)]) == 0
    png = run_dir / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_needs_a_run_directory(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(tmp_path)])
    assert exit_info.value.code == 2


def test_packed_batches_of_any_document_count_compile_once(data_dir):
    """device_batch marks cu_seqlens dynamic, so new document counts reuse the first graph."""
    from torch._dynamo.testing import CompileCounter

    from cdssm.training.loop import build_lm, device_batch

    torch._dynamo.reset()
    torch.manual_seed(0)
    config = tiny(data_dir, "unused", steps=1)
    model = build_lm(config, VOCAB)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    loader = ShardLoader(data_dir, "train", 4, 64, packed=True)
    counts = set()
    for _ in range(4):
        batch = device_batch(loader.next_batch(), torch.device("cpu"))
        counts.add(batch["cu_seqlens"].shape[0])
        compiled(**batch).loss.backward()
    assert len(counts) >= 3  # the documents per batch did change
    assert counter.frame_count == 1


def test_plot_several_runs_side_by_side(tmp_path, capsys):
    from cdssm.training.metrics import MetricsLog

    runs = []
    for name, tokens_per_step, scale in (("cdssm", 1024, 1.0), ("transformer", 2048, 1.2)):
        log = MetricsLog(str(tmp_path / name))
        for step in range(1, 11):
            log.write({"step": step, "loss": scale * 10 / step, "tokens": step * tokens_per_step})
            if step % 5 == 0:
                log.write({"step": step, "val_loss": scale * 11 / step})
        runs.append(str(tmp_path / name))
    png = tmp_path / "both.png"
    assert main(["plot", *runs, "--out", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    with pytest.raises(SystemExit) as exit_info:  # several runs need --out
        main(["plot", *runs])
    assert exit_info.value.code == 2 and "out: required" in capsys.readouterr().err
    MetricsLog(str(tmp_path / "val-only")).write({"step": 5, "val_loss": 3.0})
    with pytest.raises(SystemExit):  # no train records: no token axis
        main(["plot", runs[0], str(tmp_path / "val-only"), "--out", str(png)])
    assert "cannot be placed on the token axis" in capsys.readouterr().err


def test_resume_with_more_steps_follows_the_new_schedule(data_dir, tmp_path):
    """Extending a finished run: the first resumed step already uses the longer schedule."""
    from cdssm.training.optim import lr_factor

    run = dict(warmup_steps=2, eval_every=0, eval_batches=1, min_lr_ratio=0.1)
    train(tiny(data_dir, tmp_path, steps=4, **run), make_loader=ShardLoader, progress=False)
    train(tiny(data_dir, tmp_path, steps=6, **run), resume=True, make_loader=ShardLoader,
          progress=False)
    lrs = {r["step"]: r["lr"] for r in read_metrics(str(tmp_path)) if "lr" in r}
    lr = TINY["lr"]
    assert lrs[4] == pytest.approx(lr * lr_factor(3, 2, 4, 0.1))  # the first run's schedule
    for step in (5, 6):  # the extended schedule from the first resumed step on
        assert lrs[step] == pytest.approx(lr * lr_factor(step - 1, 2, 6, 0.1))
