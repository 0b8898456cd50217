"""Batches of token windows from prepared shards (``cdssm data prepare``), for training and eval.

A split of N tokens holds W = ⌊N / T⌋ windows of T = seq_len tokens. Epoch e (training) takes
the windows at ``shift_e + w·T`` (w < W) in the order of a permutation of 0..W−1; shift_e in
[0, N − W·T] and the permutation are drawn by ``numpy.random.default_rng([seed, e])``, so the
window edges move between epochs and every run with the same seed sees the same batches. Step s
of the epoch is global batch s: windows s·R·B … (s+1)·R·B − 1 of the permutation (R = world_size,
B = batch_size), of which rank r takes the r-th run of B. An epoch has ⌊W / (R·B)⌋ steps; the
leftover windows wait for the next epoch's permutation.

Each batch (``Batch``, CPU tensors):
  packed=False  input_ids (B, T) int64; labels (B, T) int64, the same tokens (the models shift
                labels by one internally: see ``cdssm.models.lm_loss``); cu_seqlens None
  packed=True   input_ids, labels (1, B·T): the B windows back to back; cu_seqlens (N + 1,) int32,
                0 < … < B·T, a boundary at every window start and after every EOT token, so no
                sequence crosses a document boundary (a document cut by a window edge is cut)
"""

from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Union

import numpy as np
import torch

from .data import SPLITS, load_meta, shard_path


class Batch(NamedTuple):
    """One batch (see the module docstring for shapes)."""
    input_ids: torch.Tensor
    labels: torch.Tensor
    cu_seqlens: Optional[torch.Tensor]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


class TokenLoader:
    """Deterministic, resumable, rank-sharded batches of one split of a prepared folder.

    ``next_batch()`` gives the next training batch; ``epoch`` and ``step`` say where the next
    one comes from; ``state_dict()`` / ``load_state_dict()`` save and restore that position, so
    a resumed run gets the same batches as an uninterrupted one. ``iter_eval()`` walks the split
    in order (typically val) without moving that position.
    """

    def __init__(self, data_dir: Union[str, Path], split: str, batch_size: int, seq_len: int, *,
                 seed: int = 0, packed: bool = False, rank: int = 0, world_size: int = 1):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        _check_int("batch_size", batch_size, 1)
        _check_int("seq_len", seq_len, 2)
        _check_int("seed", seed, 0)
        _check_int("world_size", world_size, 1)
        _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size = {world_size}, got {rank}")
        meta = load_meta(data_dir)
        self.split, self.batch_size, self.seq_len = split, batch_size, seq_len
        self.seed, self.packed, self.rank, self.world_size = seed, packed, rank, world_size
        self.vocab_size: int = meta["vocab_size"]
        self.eot_id: int = meta["eot_id"]
        self.n_tokens: int = meta["tokens"][split]
        path = shard_path(data_dir, split)
        dtype = np.dtype(meta["dtype"])
        if not path.is_file() or path.stat().st_size != self.n_tokens * dtype.itemsize:
            raise ValueError(f"data_dir: {path} is missing or does not hold the {self.n_tokens} "
                             f"tokens meta.json records; prepare the folder again with "
                             f"`cdssm data prepare --force --out {data_dir}`")
        windows_per_step = batch_size * world_size
        self.n_windows = self.n_tokens // seq_len
        if self.n_windows < windows_per_step:
            raise ValueError(
                f"seq_len: the {split} split of {data_dir} has {self.n_tokens} tokens, fewer than "
                f"batch_size · seq_len · world_size = {windows_per_step * seq_len}; use a "
                f"shorter seq_len or smaller batch, or prepare more {split} data")
        self.steps_per_epoch = self.n_windows // windows_per_step
        self._tokens = np.memmap(path, dtype=dtype, mode="r")
        self._epoch = self._step = 0
        self._order_epoch, self._order = -1, None

    @property
    def epoch(self) -> int:
        """Epochs completed: the next batch comes from epoch ``epoch``."""
        return self._epoch

    @property
    def step(self) -> int:
        """Batches taken from the current epoch (0 ≤ step < steps_per_epoch)."""
        return self._step

    def _epoch_order(self, epoch: int):
        """(shift, window permutation) of ``epoch``, cached for the current one."""
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            shift = int(rng.integers(0, self.n_tokens - self.n_windows * self.seq_len + 1))
            self._order_epoch, self._order = epoch, (shift, rng.permutation(self.n_windows))
        return self._order

    def _batch(self, starts: np.ndarray) -> Batch:
        windows = np.stack([self._tokens[s:s + self.seq_len] for s in starts]).astype(np.int64)
        if not self.packed:
            input_ids = torch.from_numpy(windows)
            return Batch(input_ids, input_ids.clone(), None)
        flat = windows.reshape(-1)
        total = flat.shape[0]
        after_eot = np.flatnonzero(flat == self.eot_id) + 1
        bounds = np.union1d(np.arange(0, total + 1, self.seq_len), after_eot)
        input_ids = torch.from_numpy(flat).view(1, total)
        return Batch(input_ids, input_ids.clone(), torch.from_numpy(bounds.astype(np.int32)))

    def _rank_slice(self, step: int) -> slice:
        first = (step * self.world_size + self.rank) * self.batch_size
        return slice(first, first + self.batch_size)

    def next_batch(self) -> Batch:
        """The next training batch of this rank; advances ``step`` (and ``epoch`` at its end)."""
        shift, order = self._epoch_order(self._epoch)
        batch = self._batch(shift + order[self._rank_slice(self._step)] * self.seq_len)
        self._step += 1
        if self._step == self.steps_per_epoch:
            self._epoch, self._step = self._epoch + 1, 0
        return batch

    def iter_eval(self, max_batches: Optional[int] = None) -> Iterator[Batch]:
        """This rank's batches of the split's windows in order (shift 0, no permutation): at
        most ``max_batches`` (None: all ``steps_per_epoch``). Leaves the training position."""
        if max_batches is not None:
            _check_int("max_batches", max_batches, 1)
        steps = self.steps_per_epoch if max_batches is None else min(max_batches,
                                                                     self.steps_per_epoch)
        windows = np.arange(self.n_windows)
        for step in range(steps):
            yield self._batch(windows[self._rank_slice(step)] * self.seq_len)

    def _config(self) -> dict:
        return dict(split=self.split, batch_size=self.batch_size, seq_len=self.seq_len,
                    seed=self.seed, world_size=self.world_size, n_tokens=self.n_tokens)

    def state_dict(self) -> dict:
        """The position (epoch, step) and the settings it depends on; the same on every rank."""
        return dict(self._config(), epoch=self._epoch, step=self._step)

    def load_state_dict(self, state: dict) -> None:
        """Continues from ``state`` (from ``state_dict()`` of a loader with the same split,
        batch_size, seq_len, seed, world_size and data; ValueError naming what differs)."""
        for key, value in self._config().items():
            if state.get(key) != value:
                raise ValueError(f"state: {key} = {state.get(key)!r} in the saved loader state, "
                                 f"but this loader has {key} = {value!r}")
        epoch, step = state.get("epoch"), state.get("step")
        _check_int("state['epoch']", epoch, 0)
        _check_int("state['step']", step, 0)
        if step >= self.steps_per_epoch:
            raise ValueError(f"state: step = {step}, expected < steps_per_epoch = "
                             f"{self.steps_per_epoch}")
        self._epoch, self._step = epoch, step
