"""TokenLoader: deterministic windows, exact resume, packed cu_seqlens at document boundaries,
rank sharding, in-order eval, argument errors."""

import json
import random

import numpy as np
import pytest
import tiktoken
import torch

from cdssm.training import data
from cdssm.training.data import prepare
from cdssm.training.loader import Batch, TokenLoader

EOT = 256
B, T = 3, 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Byte-level tokens (EOT = 256) of 300 random documents of 1–80 letters; ~30 in val."""
    root = tmp_path_factory.mktemp("loader")
    rng = random.Random(0)
    lines = [json.dumps({"text": "".join(rng.choices("abcdefghij ", k=rng.randint(1, 80)))})
             for _ in range(300)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    byte_level = tiktoken.Encoding("bytes", pat_str=r"[\s\S]",
                                   mergeable_ranks={bytes([i]): i for i in range(256)},
                                   special_tokens={"<|endoftext|>": EOT})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "get_encoding", lambda name: byte_level)
        prepare([root / "docs.jsonl"], root / "out", val_fraction=0.1, progress=False)
    return root / "out"


def tokens_of(data_dir, split="train"):
    return np.fromfile(data_dir / f"{split}.bin", dtype=np.uint16).astype(np.int64)


def take(loader, n):
    return [loader.next_batch() for _ in range(n)]


def assert_same(batches, others):
    assert len(batches) == len(others)
    for batch, other in zip(batches, others):
        assert torch.equal(batch.input_ids, other.input_ids)
        assert torch.equal(batch.labels, other.labels)
        assert (batch.cu_seqlens is None) == (other.cu_seqlens is None)
        if batch.cu_seqlens is not None:
            assert torch.equal(batch.cu_seqlens, other.cu_seqlens)


def test_batches_are_windows_of_the_split(data_dir):
    loader = TokenLoader(data_dir, "train", B, T)
    tokens = tokens_of(data_dir)
    assert loader.n_tokens == tokens.size and (loader.vocab_size, loader.eot_id) == (257, EOT)
    assert loader.steps_per_epoch == tokens.size // T // B
    batch = loader.next_batch()
    assert isinstance(batch, Batch) and batch.cu_seqlens is None
    assert batch.input_ids.shape == (B, T) and batch.input_ids.dtype == torch.int64
    assert torch.equal(batch.labels, batch.input_ids)
    assert batch.labels.data_ptr() != batch.input_ids.data_ptr()
    haystack = tokens.astype(np.uint16).tobytes()
    for row in batch.input_ids.numpy():
        assert haystack.find(row.astype(np.uint16).tobytes()) % 2 == 0


def test_deterministic_and_seeded(data_dir):
    first = take(TokenLoader(data_dir, "train", B, T, seed=1), 5)
    assert_same(first, take(TokenLoader(data_dir, "train", B, T, seed=1), 5))
    other = TokenLoader(data_dir, "train", B, T, seed=2).next_batch()
    assert not torch.equal(first[0].input_ids, other.input_ids)


def test_epochs(data_dir):
    loader = TokenLoader(data_dir, "train", B, T)
    steps = loader.steps_per_epoch
    epoch0 = take(loader, steps)
    assert (loader.epoch, loader.step) == (1, 0)
    windows0 = {tuple(row) for b in epoch0 for row in b.input_ids.tolist()}
    assert len(windows0) == steps * B  # no window twice in an epoch
    epoch1 = take(loader, 1)
    assert (loader.epoch, loader.step) == (1, 1)
    assert not torch.equal(epoch0[0].input_ids, epoch1[0].input_ids)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("stop", [0, 5, "near_end_of_epoch"])
def test_exact_resume(data_dir, packed, stop):
    reference = TokenLoader(data_dir, "train", B, T, seed=7, packed=packed)
    stop = reference.steps_per_epoch - 3 if stop == "near_end_of_epoch" else stop
    expected = take(reference, stop + 8)
    interrupted = TokenLoader(data_dir, "train", B, T, seed=7, packed=packed)
    take(interrupted, stop)
    state = json.loads(json.dumps(interrupted.state_dict()))  # survives a JSON checkpoint
    resumed = TokenLoader(data_dir, "train", B, T, seed=7, packed=packed)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.step) == (interrupted.epoch, interrupted.step)
    assert_same(take(resumed, 8), expected[stop:])


@pytest.mark.parametrize("key,value,message", [
    ("seed", 8, "seed = 8 in the saved loader state, but this loader has seed = 7"),
    ("seq_len", 32, "seq_len = 32"), ("world_size", 2, "world_size = 2"),
    ("n_tokens", 5, "n_tokens = 5"), ("split", "val", "split = 'val'"),
    ("step", 10 ** 6, "step = 1000000, expected < steps_per_epoch"),
    ("epoch", -1, r"state\['epoch'\]: expected an integer >= 0"),
])
def test_load_state_dict_checks(data_dir, key, value, message):
    loader = TokenLoader(data_dir, "train", B, T, seed=7)
    state = dict(loader.state_dict(), **{key: value})
    with pytest.raises(ValueError, match=message):
        loader.load_state_dict(state)


def test_packed_cu_seqlens(data_dir):
    packed = TokenLoader(data_dir, "train", B, T, seed=3, packed=True)
    plain = TokenLoader(data_dir, "train", B, T, seed=3)
    n_documents_cut = 0
    for batch, reference in zip(take(packed, 20), take(plain, 20)):
        assert batch.input_ids.shape == (1, B * T)
        assert torch.equal(batch.input_ids, reference.input_ids.reshape(1, B * T))
        assert torch.equal(batch.labels, batch.input_ids)
        cu = batch.cu_seqlens
        assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == B * T
        assert bool((cu[1:] > cu[:-1]).all())
        ids = batch.input_ids[0]
        after_eot = {p + 1 for p in torch.nonzero(ids == EOT).flatten().tolist()}
        window_starts = set(range(0, B * T + 1, T))
        assert set(cu.tolist()) == after_eot | window_starts
        for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
            assert not bool((ids[start:end - 1] == EOT).any())  # EOT only last in a sequence
            assert start // T == (end - 1) // T  # inside one window
        n_documents_cut += sum(1 for s in window_starts - after_eot if 0 < s < B * T)
    assert n_documents_cut > 0  # the case of a document cut by a window edge occurred


@pytest.mark.parametrize("packed", [False, True])
def test_rank_sharding(data_dir, packed):
    world_size = 3
    ranks = [TokenLoader(data_dir, "train", 2, T, seed=5, packed=packed, rank=r,
                         world_size=world_size) for r in range(world_size)]
    single = TokenLoader(data_dir, "train", 2 * world_size, T, seed=5)
    assert ranks[0].steps_per_epoch == single.steps_per_epoch
    seen = set()
    for _ in range(single.steps_per_epoch):
        rows = [loader.next_batch().input_ids.reshape(2, T) for loader in ranks]
        assert torch.equal(torch.cat(rows), single.next_batch().input_ids)
        windows = {tuple(row) for r in rows for row in r.tolist()}
        assert len(windows) == 2 * world_size and not windows & seen
        seen |= windows


def test_iter_eval_walks_the_split_in_order(data_dir):
    tokens = tokens_of(data_dir, "val")
    loader = TokenLoader(data_dir, "val", 2, T)
    batches = list(loader.iter_eval())
    assert len(batches) == loader.steps_per_epoch == tokens.size // T // 2
    walked = torch.cat([b.input_ids.reshape(-1) for b in batches]).numpy()
    assert np.array_equal(walked, tokens[:walked.size])
    assert len(list(loader.iter_eval(max_batches=2))) == 2
    assert (loader.epoch, loader.step) == (0, 0)
    shards = [list(TokenLoader(data_dir, "val", 1, T, rank=r, world_size=2).iter_eval())
              for r in range(2)]
    interleaved = torch.cat([b.input_ids for pair in zip(*shards) for b in pair]).reshape(-1)
    assert np.array_equal(interleaved.numpy(), tokens[:interleaved.numel()])


@pytest.mark.parametrize("args,kwargs,message", [
    (("val", B, 10 ** 4), {}, r"seq_len: the val split of .* has \d+ tokens, fewer than"),
    (("train", B, T), dict(world_size=10 ** 4), "fewer than batch_size · seq_len · world_size"),
    (("test", B, T), {}, "split: expected one of train, val, got 'test'"),
    (("train", 0, T), {}, "batch_size: expected an integer >= 1, got 0"),
    (("train", B, 1), {}, "seq_len: expected an integer >= 2, got 1"),
    (("train", B, 16.0), {}, "seq_len: expected an integer >= 2, got 16.0"),
    (("train", B, T), dict(rank=2, world_size=2), "rank: expected 0 <= rank < world_size = 2"),
    (("train", B, T), dict(seed=-1), "seed: expected an integer >= 0"),
])
def test_bad_arguments(data_dir, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenLoader(data_dir, *args, **kwargs)


def test_missing_data_dir(tmp_path):
    with pytest.raises(ValueError, match=r"data_dir: no token shards in .* `cdssm data prepare"):
        TokenLoader(tmp_path / "nowhere", "train", B, T)


def test_empty_val_split(tmp_path):
    (tmp_path / "docs.txt").write_text("one document")
    prepare([tmp_path / "docs.txt"], tmp_path / "out", val_fraction=0, progress=False)
    with pytest.raises(ValueError, match="seq_len: the val split .* has 0 tokens"):
        TokenLoader(tmp_path / "out", "val", 1, 2)


def test_truncated_shard(tmp_path):
    (tmp_path / "docs.txt").write_text("one document")
    prepare([tmp_path / "docs.txt"], tmp_path / "out", val_fraction=0, progress=False)
    (tmp_path / "out" / "train.bin").write_bytes(b"\0\0")
    with pytest.raises(ValueError, match=r"data_dir: .*train.bin is missing or does not hold"):
        TokenLoader(tmp_path / "out", "train", 1, 2)


def test_max_batches(data_dir):
    with pytest.raises(ValueError, match="max_batches: expected an integer >= 1, got 0"):
        next(TokenLoader(data_dir, "val", 1, T).iter_eval(max_batches=0))
