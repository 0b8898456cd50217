"""Autoregressive generation for any causal LM of this package.

The model needs the common interface: ``config.vocab_size``, ``init_state(batch_size,
device=...)`` and ``forward(input_ids, cu_seqlens=None, state=None, logit_positions=None)``
returning a ``CausalLMOutput`` whose ``state`` continues the sequences. Prompts of different
lengths are prefilled together as one packed batch (``cu_seqlens``, one state per prompt: no
padding ever enters a recurrent state; logits only at each prompt's last token), then decoded
together, one token per sequence and step, through the state: O(1) work per token for the
CD-SSM, O(context) for the Transformer's KV cache. A runner does the two model calls (eager,
CUDA graph, or AOTInductor packages); sampling stays here, in Python, for every runner.
"""

import math
from numbers import Real
from typing import Iterator, Optional, Sequence

import torch

from .programs import DecodeProgram, PrefillProgram


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int],
                top_p: Optional[float], generator: torch.Generator) -> torch.Tensor:
    """Next token per row of ``logits`` (N, V): (N,) int64.

    temperature 0: argmax (greedy). Otherwise p ∝ softmax(logits / temperature) restricted to
    the top_k largest logits (ties at the k-th value kept) and then to the nucleus: the
    highest-probability tokens whose mass reaches top_p (a token is dropped when the tokens
    ranked above it already hold ≥ top_p, so the most likely token always stays); one draw
    from ``generator``.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pack_prompts(prompts: Sequence[Sequence[int]], device) -> tuple:
    """N prompts as one packed row: (input_ids (1, T) int64, cu_seqlens (N + 1,) int32), T the
    total number of prompt tokens."""
    lengths = torch.tensor([len(p) for p in prompts])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    input_ids = torch.tensor([t for p in prompts for t in p], device=device)[None]
    return input_ids, cu_seqlens.to(device=device, dtype=torch.int32)


class ModelRunner:
    """Prefill and decode steps of an eager causal LM: the reference path of ``stream``.

    ``prefill(prompts)`` → (logits after each prompt (N, V), state); ``step(tokens (N,), state)``
    → (logits (N, V), the next state). Every runner (``CUDAGraphRunner``, ``PackagedLM``) has
    these two methods and ``vocab_size`` and ``device`` attributes.
    """

    def __init__(self, model):
        self.model = model
        self.vocab_size = model.config.vocab_size
        self.device = next(model.parameters()).device
        self._prefill, self._decode = PrefillProgram(model), DecodeProgram(model)

    @torch.no_grad()
    def prefill(self, prompts: list):
        return self._prefill(*pack_prompts(prompts, self.device))

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state):
        return self._decode(tokens, state)


def _is_causal_lm(model) -> bool:
    return (isinstance(model, torch.nn.Module) and callable(getattr(model, "init_state", None))
            and _is_int(getattr(getattr(model, "config", None), "vocab_size", None)))


def make_runner(model, cuda_graph: bool = False):
    """The runner that ``stream`` drives: a loaded package as it is, an eager model wrapped in
    ``ModelRunner``, or in ``CUDAGraphRunner`` when ``cuda_graph``."""
    if not isinstance(cuda_graph, bool):
        raise ValueError(f"cuda_graph: expected a bool, got {cuda_graph!r}")
    from .packages import PackagedLM

    if isinstance(model, PackagedLM):
        if cuda_graph:
            raise ValueError("cuda_graph: only for an eager model (an AOTInductor package runs "
                             "its own compiled code)")
        return model
    if not _is_causal_lm(model):
        raise ValueError(f"model: expected a causal LM with config.vocab_size and "
                         f"init_state(batch_size), or a PackagedLM, got {type(model).__name__}")
    if cuda_graph:
        from .cuda_graph import CUDAGraphRunner

        return CUDAGraphRunner(model)
    return ModelRunner(model)


def _check_arguments(vocab_size, prompts, max_new_tokens, temperature, top_k, top_p,
                     stop_tokens, seed) -> None:
    V = vocab_size

    def token_ids(value) -> bool:
        return (isinstance(value, Sequence) and not isinstance(value, str)
                and all(_is_int(t) and 0 <= t < V for t in value))

    if not (isinstance(prompts, Sequence) and len(prompts) > 0
            and all(token_ids(p) and len(p) > 0 for p in prompts)):
        raise ValueError(f"prompts: expected a non-empty list of non-empty lists of token ids in "
                         f"[0, {V}), got {prompts!r:.200}")
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, Real) and not isinstance(temperature, bool)
            and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature: expected a finite number >= 0 (0 = greedy), "
                         f"got {temperature!r}")
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise ValueError(f"top_k: expected None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, Real) and not isinstance(top_p, bool)
                                  and 0 < top_p <= 1):
        raise ValueError(f"top_p: expected None or a number in (0, 1], got {top_p!r}")
    if not token_ids(stop_tokens):
        raise ValueError(f"stop_tokens: expected a sequence of token ids in [0, {V}), "
                         f"got {stop_tokens!r:.200}")
    if seed is not None and not _is_int(seed):
        raise ValueError(f"seed: expected None or an int, got {seed!r}")


def stream(model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
           temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None, stop_tokens: Sequence[int] = (),
           seed: Optional[int] = None, cuda_graph: bool = False) -> Iterator[tuple]:
    """Generates for every prompt at once, yielding after each step a tuple with, per prompt,
    the new token id, or None once that sequence has stopped.

    A sequence stops at its first token in ``stop_tokens`` (which is not emitted) or after
    ``max_new_tokens``; the iterator ends when every sequence has stopped. Sampling: see
    ``sample_next``; the draws come from one ``torch.Generator`` seeded with ``seed`` (a random
    seed when None), so they depend on the set of prompts; greedy decoding does not. Each
    sequence's tokens equal what it would get alone, up to floating-point reassociation.
    Runs without gradients on the model's device; arguments are checked first (ValueError
    naming the argument).

    model: an eager causal LM, or a ``PackagedLM`` (AOTInductor packages from ``cdssm export``:
    the same tokens as the eager model for the same seed, up to floating-point reassociation).
    cuda_graph: decode through one CUDA graph of the step (``CUDAGraphRunner``; a model on a
    CUDA device with a fixed-size state): the same tokens as the eager path.
    """
    runner = make_runner(model, cuda_graph)
    _check_arguments(runner.vocab_size, prompts, max_new_tokens, temperature, top_k, top_p,
                     stop_tokens, seed)
    generator = torch.Generator(device=runner.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return _decode(runner, [list(p) for p in prompts], max_new_tokens,
                   (temperature, top_k, top_p, generator), set(stop_tokens))


def _decode(runner, prompts: list, max_new_tokens: int, sampling: tuple,
            stop: set) -> Iterator[tuple]:
    stopped = [False] * len(prompts)
    if max_new_tokens == 0:
        return
    logits, state = runner.prefill(prompts)
    for step in range(max_new_tokens):
        tokens = sample_next(logits, *sampling)
        emitted = []
        for i, token in enumerate(tokens.tolist()):
            stopped[i] = stopped[i] or token in stop
            emitted.append(None if stopped[i] else token)
        yield tuple(emitted)
        if all(stopped) or step == max_new_tokens - 1:
            return
        logits, state = runner.step(tokens, state)


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             temperature: float = 1.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, stop_tokens: Sequence[int] = (),
             seed: Optional[int] = None, cuda_graph: bool = False) -> list:
    """The new tokens of every prompt: a list of token-id lists (stop tokens excluded).

    Same arguments and behaviour as ``stream``, which yields the tokens as they come.
    """
    new_tokens = [[] for _ in prompts]
    for step in stream(model, prompts, max_new_tokens, temperature, top_k, top_p, stop_tokens,
                       seed, cuda_graph):
        for tokens, token in zip(new_tokens, step):
            if token is not None:
                tokens.append(token)
    return new_tokens
