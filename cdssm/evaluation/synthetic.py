"""A loader of generated examples with the interface ``cdssm.training.loop`` expects.

A task supplies ``sample(rng, batch_size) -> (input_ids, labels)``, numpy int64 (B, T) arrays
(labels unshifted, −100 where nothing is asked). Training batch s is drawn with
``numpy.random.default_rng([seed, split, s])``, evaluation batch i with ``[seed, split, i]`` as
well, so every run with the same seed sees the same examples, and train and val differ.
"""

import functools
from typing import Callable

import numpy as np
import torch

from ..training.loader import Batch

_SPLIT_IDS = {"train": 0, "val": 1}


class SyntheticLoader:
    """``next_batch()``, ``iter_eval(n)``, ``state_dict()`` / ``load_state_dict()`` over
    generated batches (see the module docstring)."""

    def __init__(self, sample: Callable, split: str, batch_size: int, seed: int):
        if split not in _SPLIT_IDS:
            raise ValueError(f"split: expected one of {sorted(_SPLIT_IDS)}, got {split!r}")
        self.sample, self.batch_size, self.seed = sample, batch_size, seed
        self._split = _SPLIT_IDS[split]
        self._step = 0

    def _batch(self, index: int) -> Batch:
        rng = np.random.default_rng([self.seed, self._split, index])
        input_ids, labels = self.sample(rng, self.batch_size)
        return Batch(torch.from_numpy(input_ids), torch.from_numpy(labels), None)

    def next_batch(self) -> Batch:
        batch = self._batch(self._step)
        self._step += 1
        return batch

    def iter_eval(self, max_batches=None):
        for index in range(1 if max_batches is None else max_batches):
            yield self._batch(index)

    def state_dict(self) -> dict:
        return {"step": self._step}

    def load_state_dict(self, state: dict) -> None:
        self._step = state["step"]


def _make(sample, data_dir, split, batch_size, seq_len, *, seed, packed, rank, world_size):
    if packed or world_size != 1:
        raise ValueError("packed, world_size: synthetic tasks train unpacked on one process")
    return SyntheticLoader(sample, split, batch_size, seed)


def synthetic_loader_factory(sample: Callable) -> Callable:
    """A ``make_loader`` for ``cdssm.training.loop.train`` that ignores data_dir and seq_len (the
    examples come from ``sample``)."""
    return functools.partial(_make, sample)
