"""Files written atomically: the content goes to a temporary file beside the target, is flushed
to disk, and is renamed onto the target in one step, so a reader (or a resumed run after a crash)
sees either the previous file or the complete new one, never a partial one."""

import json
import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Calls ``write(tmp)`` to fill a temporary path in ``path``'s directory (created if missing;
    ``suffix`` for writers that look at the extension), fsyncs it, makes it readable by all like
    a plain new file, and renames it to ``path``. On any error the temporary file is removed and
    ``path`` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{os.path.basename(path)}-",
                               suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, value) -> None:
    """``value`` as indented JSON (UTF-8, trailing newline), written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2)
            f.write("\n")

    atomic_write(path, write)
