"""`cdssm generate` and `cdssm export` on CPU: streamed text, checkpoints of every kind, the
package round trip in a fresh process, and bad inputs (exit status 2 and a message naming the
argument)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from cdssm.cli import main
from cdssm.inference.generate import generate
from cdssm.training.config import TrainConfig
from cdssm.training.loop import train
from cdssm.training.tokenizer import get_encoding
from train_data import ShardLoader, write_shards

PROMPT = "ROMEO: But soft, what light"


def ids_line(out: str) -> list:
    return [int(t) for t in re.search(r"^ids:(.*)$", out, re.M).group(1).split()]


@pytest.mark.parametrize("options", [
    ["--temperature", "0"],
    ["--temperature", "0.9", "--top-k", "40", "--seed", "3"],
    ["--temperature", "1.0", "--top-p", "0.8", "--seed", "4", "--no-stop"],
])
def test_generate_streams_the_models_tokens(cdssm_packages, capsys, options):
    _, checkpoint, model = cdssm_packages
    argv = ["generate", "--checkpoint", checkpoint, "--prompt", PROMPT, "--max-new-tokens", "9",
            "--print-ids", *options]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    encoding = get_encoding("gpt2")
    new = ids_line(out)
    kwargs = dict(temperature=float(options[1]), top_k=50, seed=0)  # the CLI defaults
    for name, key, cast in (("--top-k", "top_k", int), ("--top-p", "top_p", float),
                            ("--seed", "seed", int)):
        if name in options:
            kwargs[key] = cast(options[options.index(name) + 1])
    stop = [] if "--no-stop" in options else [encoding.eot_token]
    assert new == generate(model, [encoding.encode(PROMPT)], 9, stop_tokens=stop, **kwargs)[0]
    assert out.startswith(PROMPT + encoding.decode(new) + "\n")
    assert re.search(rf"\[{len(encoding.encode(PROMPT))} prompt tokens, {len(new)} new tokens in "
                     r"[\d.]+ s", err)


def test_generate_from_the_package_in_a_fresh_process_equals_eager(cdssm_packages, capsys):
    package, checkpoint, _ = cdssm_packages
    options = ["--prompt", PROMPT, "--max-new-tokens", "12", "--temperature", "0.8", "--seed",
               "11", "--print-ids"]
    assert main(["generate", "--checkpoint", checkpoint, *options]) == 0
    eager = capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "cdssm", "generate", "--package", package,
                             *options], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == eager and len(ids_line(eager)) == 12


@pytest.mark.parametrize("arch", ["cdssm", "transformer"])
def test_generate_from_a_preset(arch, capsys):
    argv = ["generate", "--preset", "tiny", "--arch", arch, "--prompt", "Hello", "--temperature",
            "0", "--max-new-tokens", "4", "--no-stop", "--print-ids"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and len(ids_line(first)) == 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real `cdssm train` run directory (2 steps of a d-64 CD-SSM with the GPT-2 vocabulary)."""
    tmp = tmp_path_factory.mktemp("run")
    data = write_shards(tmp / "data", vocab_size=50257, train_tokens=4000, val_tokens=1000)
    config = TrainConfig(d_model=64, n_layers=1, seq_len=32, batch_size=2, steps=2,
                         warmup_steps=1, eval_batches=1, device="cpu", compile=False,
                         data_dir=data, out_dir=str(tmp / "run"))
    train(config, make_loader=ShardLoader, progress=False)
    return str(tmp / "run")


@pytest.mark.parametrize("layout", ["run directory", "final/", "checkpoint.pt only"])
def test_generate_from_a_training_run(run_dir, tmp_path, capsys, layout):
    from cdssm.models.cdssm import CDSSMForCausalLM

    expected = CDSSMForCausalLM.from_pretrained(os.path.join(run_dir, "final"))
    directory = {"run directory": run_dir, "final/": os.path.join(run_dir, "final")}.get(layout)
    if directory is None:  # a run still in progress: no final/ yet
        directory = str(tmp_path / "run")
        shutil.copytree(run_dir, directory, ignore=shutil.ignore_patterns("final"))
    assert main(["generate", "--checkpoint", directory, "--prompt", PROMPT, "--temperature", "0",
                 "--max-new-tokens", "5", "--no-stop", "--print-ids"]) == 0
    encoding = get_encoding("gpt2")
    assert ids_line(capsys.readouterr().out) == \
        generate(expected, [encoding.encode(PROMPT)], 5, temperature=0)[0]


@pytest.fixture
def small_vocab_checkpoint(tmp_path):
    from cdssm.models.registry import build_model

    build_model("cdssm", 64, 1, 64, 1000).save_pretrained(str(tmp_path / "small_vocab"))
    return str(tmp_path / "small_vocab")


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")


@pytest.mark.parametrize("argv,message", [
    (["generate", "--prompt", "x"], "one of the arguments --checkpoint --preset --package is "
                                    "required"),
    (["generate", "--checkpoint", "{missing}", "--prompt", "x"], "checkpoint: expected a "
                                                                 "directory"),
    (["generate", "--checkpoint", "{empty}", "--prompt", "x"], "checkpoint: no model in"),
    (["export", "--checkpoint", "{missing}", "--out", "{empty}"], "checkpoint: expected a "
                                                                  "directory"),
    (["generate", "--checkpoint", "{small_vocab}", "--prompt", "x"],
     "checkpoint: the model's vocabulary has 1000 tokens, fewer than the GPT-2 tokenizer's"),
    (["generate", "--preset", "tiny", "--prompt", ""], "prompt: expected a non-empty string"),
    (["generate", "--package", "{package}", "--prompt", ""], "prompt: expected a non-empty"),
    (["generate", "--package", "{empty}", "--prompt", "x"], "package: no manifest.json in"),
    (["generate", "--package", "{package}", "--prompt", "x", "--device", "cuda"],
     "device: the package in"),
    (["generate", "--package", "{package}", "--prompt", "x", "--cuda-graph"],
     "--cuda-graph: only for an eager model"),
    (["generate", "--package", "{package}", "--prompt", "x", "--dtype", "bfloat16"],
     "--dtype: not with --package"),
    (["generate", "--preset", "tiny", "--prompt", "x", "--device", "cpu", "--cuda-graph"],
     "cuda_graph: needs the model on a CUDA device"),
    (["generate", "--preset", "tiny", "--prompt", "x", "--top-p", "1.5"], "--top-p: expected a "
                                                                          "number in (0, 1]"),
    (["export", "--preset", "tiny", "--arch", "transformer", "--out", "{empty}"],
     "model: export needs a CD-SSM"),
    pytest.param(["export", "--preset", "tiny", "--out", "{empty}", "--device", "cuda"],
                 "device: cuda requested but torch.cuda.is_available() is False", marks=NO_CUDA),
    pytest.param(["generate", "--preset", "tiny", "--prompt", "x", "--device", "cuda"],
                 "device: cuda requested but torch.cuda.is_available() is False", marks=NO_CUDA),
])
def test_bad_inputs(cdssm_packages, small_vocab_checkpoint, tmp_path, capsys, argv, message):
    paths = dict(missing=str(tmp_path / "missing"), empty=str(tmp_path),
                 package=cdssm_packages[0], small_vocab=small_vocab_checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**paths) for a in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    for command, options in (("generate", ["--checkpoint", "--preset", "--package", "--prompt",
                                           "--max-new-tokens", "--temperature", "--top-k",
                                           "--top-p", "--no-stop", "--device", "--dtype",
                                           "--cuda-graph", "--print-ids", "--seed", "--arch"]),
                             ("export", ["--checkpoint", "--preset", "--out", "--device",
                                         "--dtype", "--no-progress", "--seed", "--arch"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert all(option in out for option in options)
