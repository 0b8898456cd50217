"""Training checkpoints: one file, written atomically, holding everything a resume needs.

``checkpoint.pt`` = {"step", "config", "model" (full state dict: the state-energy EMA buffers
included), "optimizer", "scheduler", "loader" (one state per rank), "rng" (one per rank: python,
numpy, torch, cuda)}. It is written to a temporary file in the same directory and renamed over
the previous one (``os.replace``), so a crash mid-write leaves the previous checkpoint intact.
"""

import os
import random

import numpy as np
import torch

from ..files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(out_dir: str) -> str:
    return os.path.join(out_dir, CHECKPOINT_NAME)


def save_checkpoint(path: str, checkpoint: dict) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename it to ``path``."""
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path: str) -> dict:
    """The checkpoint at ``path`` (on CPU); a missing file raises ValueError with a hint."""
    if not os.path.isfile(path):
        raise ValueError(f"resume: no checkpoint at {path!r} (train without --resume first, or "
                         f"point --out-dir at the run to continue)")
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    """The random states of python, numpy, torch and (when present) every CUDA device."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Inverse of ``rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
