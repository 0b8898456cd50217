"""tools/kernel_ab.sh: `prepare` exports a commit's csrc/ as the A side of a kernel A/B, and
every misuse is a clear error before any build (the `run` step itself needs the GPU machine)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "tools" / "kernel_ab.sh"


@pytest.fixture
def clone(tmp_path):
    """A clone of this repository (its committed history) with the working tree's kernel_ab.sh."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "HEAD"], check=True)
    shutil.copy(SCRIPT, repo / "tools" / "kernel_ab.sh")
    return repo


def run(repo, *args):
    return subprocess.run(["bash", "tools/kernel_ab.sh", *args], cwd=repo, capture_output=True, text=True)


def test_prepare_exports_the_commits_csrc(clone):
    first = subprocess.run(["git", "-C", str(clone), "rev-list", "--max-parents=0", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.split()[0]
    done = run(clone, "prepare", "HEAD")
    assert done.returncode == 0, done.stderr
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert (clone / ".ab" / "base" / "REF").read_text().strip() == head
    for path in ("csrc/ops.cpp", "csrc/cuda/chunk_delta_scan.cuh"):
        committed = subprocess.run(["git", "-C", str(clone), "show", f"HEAD:{path}"],
                                   capture_output=True, check=True).stdout
        assert (clone / ".ab" / "base" / path).read_bytes() == committed
    assert not (clone / ".ab" / "base" / "tools").exists()  # csrc/ only
    again = run(clone, "prepare", first)  # a second prepare replaces the first
    assert again.returncode == 0 and (clone / ".ab" / "base" / "REF").read_text().strip() == first


@pytest.mark.parametrize("args,message", [
    ((), "usage: kernel_ab.sh prepare REF | run OUT [N]"),
    (("compare",), "usage: kernel_ab.sh prepare REF | run OUT [N]"),
    (("prepare",), "prepare: name the base commit"),
    (("prepare", "no-such-ref"), "prepare: no-such-ref is not a commit"),
    (("run",), "run: name the output folder"),
    (("run", "/tmp"), "run: no .ab/base/csrc: run 'tools/kernel_ab.sh prepare REF' here and carry .ab"),
])
def test_misuse_is_a_clear_error(clone, args, message):
    done = run(clone, *args)
    assert done.returncode != 0 and message in done.stderr
    assert not (clone / "build").exists()  # nothing was built


def test_git_ignores_the_base():
    assert "/.ab/" in (ROOT / ".gitignore").read_text().split()
