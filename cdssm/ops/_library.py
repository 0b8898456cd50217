"""Loads the op library cdssm/_C*.so (schemas + CPU/CUDA kernels) and the fake kernels.

The library is a plain shared object with no Python symbols: ``torch.ops.load_library`` loads
it here, and a C++ program (the AOTInductor runner) can ``dlopen`` the same file.
"""

import glob
import os

import torch

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def library_path() -> str:
    """Path of the compiled op library (what a C++ AOTInductor runner must load)."""
    found = sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_C*.so")))
    if not found:
        raise ImportError(
            "cdssm's op library (cdssm/_C*.so) is not built. Install the package with "
            "`pip install --no-build-isolation -e .` (torch must already be installed)."
        )
    return found[0]


def _load() -> None:
    if not hasattr(torch.ops.cdssm, "chunk_delta_scan_fwd"):
        torch.ops.load_library(library_path())
    import cdssm.meta_kernels  # noqa: F401  (registers the fake kernels named by the library)


_load()
