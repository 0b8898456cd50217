"""Two gloo processes (DDP on CPU) train like one process on the same global batch, and hold
identical state-energy EMA buffers."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from cdssm.training.config import TrainConfig
from cdssm.training.loader import TokenLoader
from cdssm.training.loop import train
from train_data import ShardLoader, write_shards

RUN = dict(d_model=64, n_layers=2, seq_len=64, steps=4, warmup_steps=1, lr=3e-3, grad_accum=2,
           eval_every=2, eval_batches=2, log_every=1, device="cpu", compile=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _report(result, path) -> None:
    with open(path, "w") as f:
        json.dump({"losses": result.losses, "val": result.val_losses,
                   "ema": [b.ema.tolist() for b in result.model.blocks],
                   "weight": result.model.blocks[0].in_proj.weight.sum().item()}, f)


def _worker(rank: int, world_size: int, port: int, config: dict, loader, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    _report(train(TrainConfig(**config), make_loader=loader, progress=False),
            os.path.join(out, f"rank{rank}.json"))


@pytest.mark.parametrize("loader", [ShardLoader, TokenLoader])
def test_two_gloo_ranks_match_one_process(tmp_path, loader):
    data = write_shards(tmp_path / "data")
    one = train(TrainConfig(**RUN, batch_size=4, data_dir=data, out_dir=str(tmp_path / "one")),
                make_loader=loader, progress=False)
    _report(one, tmp_path / "one.json")
    two = dict(RUN, batch_size=2, data_dir=data, out_dir=str(tmp_path / "two"))
    mp.spawn(_worker, args=(2, _free_port(), two, loader, str(tmp_path)), nprocs=2, join=True)
    single = json.loads((tmp_path / "one.json").read_text())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # same losses, evaluations, EMA buffers and weights everywhere
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(single["losses"]),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(ranks[0]["ema"]), torch.tensor(single["ema"]),
                               rtol=1e-4, atol=1e-6)
    assert ranks[0]["weight"] == pytest.approx(single["weight"], rel=1e-4, abs=1e-5)
    assert [s for s, _ in ranks[0]["val"]] == [2, 4]
    # only rank 0 wrote the run directory
    assert (tmp_path / "two" / "checkpoint.pt").exists()


def test_torchrun_with_one_process_runs_data_parallel(tmp_path, monkeypatch):
    """Under torchrun (TORCHELASTIC_RUN_ID) even WORLD_SIZE = 1 joins a process group and wraps
    the model (DDP on CPU, FSDP2 on CUDA), and trains like a plain process."""
    from cdssm.training.parallel import close_parallel, init_parallel, wrap_data_parallel

    data = write_shards(tmp_path / "data")
    config = dict(RUN, batch_size=4, data_dir=data)
    plain = train(TrainConfig(**config, out_dir=str(tmp_path / "plain")), progress=False)
    assert not init_parallel("cpu").distributed  # no torchrun: not distributed
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not init_parallel("cpu").distributed  # WORLD_SIZE = 1 outside torchrun: neither
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    for name, value in dict(RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(name, value)
    info = init_parallel("cpu")
    try:
        assert info.distributed and info.world_size == 1
        wrapped = wrap_data_parallel(torch.nn.Linear(2, 2), torch.device("cpu"), info, False)
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        one = train(TrainConfig(**config, out_dir=str(tmp_path / "one")), progress=False)
    finally:
        close_parallel(info)
    torch.testing.assert_close(torch.tensor(one.losses), torch.tensor(plain.losses),
                               rtol=1e-5, atol=1e-6)
