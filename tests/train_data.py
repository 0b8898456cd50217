"""Tiny token shards in the `cdssm data prepare` format (without a tokenizer) and a minimal
deterministic loader over them (the TokenLoader API: next_batch, state_dict/load_state_dict,
epoch, iter_eval) that draws windows anywhere, shared by the training tests.

The data is learnable: each document is an arithmetic progression of tokens mod (V − 1) with a
random start and step in {1, 2}, ended by the EOT token V − 1.
"""

import json
import os
from typing import NamedTuple, Optional

import numpy as np
import torch

from cdssm.training.data import FORMAT

VOCAB = 32


def write_shards(data_dir, vocab_size: int = VOCAB, train_tokens: int = 20_000,
                 val_tokens: int = 4_000, seed: int = 0) -> str:
    """Writes train.bin, val.bin (uint16) and meta.json into ``data_dir``; returns it."""
    rng = np.random.default_rng(seed)
    eot = vocab_size - 1
    os.makedirs(data_dir, exist_ok=True)
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        tokens = []
        while len(tokens) < n:
            start, step, length = rng.integers(eot), rng.integers(1, 3), rng.integers(20, 60)
            tokens.extend(((start + step * np.arange(length)) % eot).tolist() + [eot])
        np.asarray(tokens[:n], dtype=np.uint16).tofile(os.path.join(data_dir, f"{split}.bin"))
    with open(os.path.join(data_dir, "meta.json"), "w") as f:
        json.dump({"format": FORMAT, "vocab_size": vocab_size, "eot_id": eot, "dtype": "uint16",
                   "tokens": {"train": train_tokens, "val": val_tokens}}, f)
    return str(data_dir)


class Batch(NamedTuple):
    input_ids: torch.Tensor
    labels: torch.Tensor
    cu_seqlens: Optional[torch.Tensor]


class ShardLoader:
    """Global batch k = world_size·batch_size windows at offsets drawn from rng(seed, k); rank r
    takes rows [r·B, (r+1)·B). So one rank with batch 2B sees what two ranks with B see."""

    def __init__(self, data_dir, split, batch_size, seq_len, *, seed=0, packed=False, rank=0,
                 world_size=1):
        self.packed, self.eot = packed, json.load(open(os.path.join(data_dir, "meta.json")))[
            "eot_id"]
        self.data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.k, self.epoch = 0, 0

    def _rows(self, offsets) -> Batch:
        """(B, T) windows; packed: (1, B·T) with a document start at every window start and
        after every EOT."""
        ids = torch.from_numpy(np.stack([self.data[o:o + self.seq_len] for o in offsets])
                               .astype(np.int64))
        if not self.packed:
            return Batch(ids, ids.clone(), None)
        flat = ids.view(1, -1)
        starts = set(range(0, flat.shape[1] + 1, self.seq_len))
        starts |= set((flat[0] == self.eot).nonzero().flatten().add(1).tolist())
        cu = torch.tensor(sorted(starts), dtype=torch.int32)
        return Batch(flat, flat.clone(), cu)

    def next_batch(self) -> Batch:
        rng = np.random.default_rng((self.seed, self.k))
        offsets = rng.integers(0, len(self.data) - self.seq_len,
                               self.world_size * self.batch_size)
        self.k += 1
        B = self.batch_size
        return self._rows(offsets[self.rank * B:(self.rank + 1) * B])

    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.k = state["k"]

    def iter_eval(self, max_batches):
        B, T = self.batch_size, self.seq_len
        for i in range(max_batches):
            first = (i * self.world_size + self.rank) * B
            if (first + B) * T > len(self.data):
                return
            yield self._rows([(first + j) * T for j in range(B)])
