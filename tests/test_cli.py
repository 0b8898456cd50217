"""The ``cdssm`` command: help, the demo, and argument errors (exit status 2 and a message)."""

import math
import os
import re
import subprocess
import sys

import pytest

from cdssm.cli import main

SMALL_DEMO = ["--d-model", "64", "--n-layers", "1", "--context-length", "64", "--vocab-size",
              "512", "--batch-size", "2", "--seq-len", "32", "--max-new-tokens", "5"]


def test_python_m_help():
    result = subprocess.run([sys.executable, "-m", "cdssm", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: cdssm" in result.stdout and "demo" in result.stdout
    assert "Cayley-Delta" in result.stdout


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--arch", "--d-model", "--n-layers", "--context-length", "--vocab-size",
                   "--prompt", "--max-new-tokens", "--temperature", "--seed"):
        assert option in out


@pytest.mark.parametrize("arch", ["cdssm", "transformer"])
def test_demo_runs_and_reports(arch, capsys):
    assert main(["demo", "--arch", arch, *SMALL_DEMO]) == 0
    out = capsys.readouterr().out
    assert f"model: {arch}, d_model=64, n_layers=1" in out
    total = int(re.search(r"\ntotal +([\d,]+)\n", out).group(1).replace(",", ""))
    assert total > 512 * 64
    loss = float(re.search(r"loss ([\d.]+) \(a uniform guess: ln V = 6.2383\)", out).group(1))
    assert abs(loss - math.log(512)) < 3  # untrained
    assert re.search(r"grad norm [\d.]+", out)
    assert "UTF-8 byte values" in out  # --vocab-size 512 is too small for GPT-2
    generated = re.search(r"generated \(untrained weights, meaningless\): ([\d ]+)\n", out).group(1)
    assert len(generated.split()) == 5
    assert re.search(r"generate: 5 tokens in [\d.]+ s", out)


def test_demo_with_the_tokenizer(monkeypatch, capsys):
    """The tokenizer path, with a byte-level stand-in for GPT-2 (no network in tests)."""
    tiktoken = pytest.importorskip("tiktoken")
    byte_level = tiktoken.Encoding("bytes", pat_str=r"[\s\S]",
                                   mergeable_ranks={bytes([i]): i for i in range(256)},
                                   special_tokens={})
    monkeypatch.setattr("cdssm.demo.load_gpt2_encoding", lambda: byte_level)
    argv = ["demo", "--arch", "transformer", *SMALL_DEMO[:-4], "--seq-len", "16",
            "--vocab-size", "50257", "--prompt", "héllo", "--max-new-tokens", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tokenizer: GPT-2 (tiktoken)" in out and "prompt (6 tokens): héllo" in out
    assert "generate: 3 tokens" in out


def test_console_script_demo(tmp_path):
    """The installed `cdssm` script, with the default sizes (GPT-2 vocabulary); tiktoken's cache
    points to an empty folder: the GPT-2 tokenizer must load offline."""
    script = os.path.join(os.path.dirname(sys.executable), "cdssm")
    if not os.path.exists(script):
        pytest.skip("the cdssm console script is not installed next to this python")
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([script, "demo", "--max-new-tokens", "4"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "vocab_size=50257" in result.stdout and "generate: 4 tokens" in result.stdout
    assert "tokenizer: GPT-2 (tiktoken)" in result.stdout


@pytest.mark.parametrize("argv,message", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["demo", "--d-model", "0"], "argument --d-model: expected an integer >= 1, got 0"),
    (["demo", "--d-model", "x"], "argument --d-model: expected an integer, got 'x'"),
    (["demo", "--arch", "rnn"], "argument --arch: invalid choice"),
    (["demo", "--temperature", "-1"], "argument --temperature: expected a finite number >= 0"),
    (["demo", "--vocab-size", "100"], "argument --vocab-size: expected an integer >= 256"),
    (["demo", "--arch", "transformer", "--d-model", "96"], "d_model: expected a multiple of 64"),
    (["demo", "--d-model", "48"], "d_model"),
    (["demo", "--seq-len", "300"], "seq_len: expected at most context_length = 256"),
    (["demo", "--prompt", ""], "prompt: expected a non-empty string"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: cdssm" in err and message in err
