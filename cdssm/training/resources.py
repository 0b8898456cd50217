"""Files fetched once and kept: the cache directory, and the error for a missing resource."""

import os
from pathlib import Path


class MissingResourceError(RuntimeError):
    """A file or package the job needs is not here; the message says how to provide it."""


def cache_dir() -> Path:
    """The cache directory: ``$CDSSM_CACHE`` when set, else ``~/.cache/cdssm`` (not created)."""
    configured = os.environ.get("CDSSM_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "cdssm"
