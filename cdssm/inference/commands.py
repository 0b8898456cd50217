"""What `cdssm generate` and `cdssm export` do (cli.py parses the arguments and calls these).

generate: GPT-2-tokenizes the prompt, then streams the continuation to ``out`` as text while it
is decoded — from an eager model (a checkpoint or a preset; optionally the CUDA-graph decode)
or from the AOTInductor packages of `cdssm export`. Stops at ``<|endoftext|>`` unless told not
to. Timing goes to ``err``.
export: writes the prefill and decode packages and the manifest (``export.export_packages``).
"""

import codecs
import time
from typing import Optional, TextIO

from .checkpoints import load_checkpoint_model, preset_model
from .generate import stream
from .text import token_text


def load_model(checkpoint: Optional[str], preset: Optional[str], arch: str, seed: int):
    """The model of ``--checkpoint`` or ``--preset`` (exactly one), on CPU."""
    if (checkpoint is None) == (preset is None):
        raise ValueError("checkpoint, preset: give exactly one of --checkpoint DIR and "
                         "--preset NAME")
    if checkpoint is not None:
        return load_checkpoint_model(checkpoint)
    return preset_model(preset, arch, seed)


def _gpt2_tokens(prompt: str, vocab_size: int):
    from ..training.tokenizer import GPT2_VOCAB_SIZE, get_encoding

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt: expected a non-empty string")
    if vocab_size < GPT2_VOCAB_SIZE:
        raise ValueError(f"checkpoint: the model's vocabulary has {vocab_size} tokens, fewer than "
                         f"the GPT-2 tokenizer's {GPT2_VOCAB_SIZE}")
    encoding = get_encoding("gpt2")
    return encoding.encode(prompt), encoding


def generate_text(model, prompt: str, max_new_tokens: int, temperature: float,
                  top_k: Optional[int], top_p: Optional[float], seed: int, stop_at_eot: bool,
                  cuda_graph: bool, print_ids: bool, out: TextIO, err: TextIO) -> list:
    """Streams the continuation of ``prompt`` by ``model`` (an eager LM or a ``PackagedLM``) to
    ``out``; returns the new token ids."""
    ids, encoding = _gpt2_tokens(prompt, model.vocab_size if hasattr(model, "vocab_size")
                                 else model.config.vocab_size)
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    print(prompt, end="", file=out, flush=True)
    new_ids = []
    start = time.perf_counter()
    for (token,) in stream(model, [ids], max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, stop_tokens=[encoding.eot_token] if stop_at_eot else [],
                           seed=seed, cuda_graph=cuda_graph):
        if token is None:
            break
        new_ids.append(token)
        print(token_text(token, encoding, text), end="", file=out, flush=True)
    elapsed = time.perf_counter() - start
    print(text.decode(b"", final=True), file=out, flush=True)
    if print_ids:
        print("ids:", *new_ids, file=out, flush=True)
    print(f"[{len(ids)} prompt tokens, {len(new_ids)} new tokens in {elapsed:.2f} s: "
          f"{len(new_ids) / max(elapsed, 1e-9):.1f} tokens/s including prefill]", file=err,
          flush=True)
    return new_ids
