"""CUDA-graph decode: the decode step of N sequences captured once, then replayed per token.

Eagerly, a decode step of a small-batch LM is host-bound: each of the ~50 kernels per block is
dispatched from Python (tens of µs each), while the GPU work per token is a few µs. A CUDA graph
replays the whole step's kernels with one launch. A graph reads and writes fixed addresses, so
the step works on static buffers: tokens (N,), the recurrent state (the model's own state type,
e.g. ``CDSSMState``: conv (n_layers, N, E, W − 1), ssm (n_layers, N, H, 2P, D) fp32) and the
logits (N, V). One replay computes logits and the next state from the buffers and copies the
state back into them, so consecutive replays continue the sequences. The kernels are those of
the eager step, in the same order, so the logits equal the eager ones bit for bit.

This needs a state whose shapes do not change from step to step (the CD-SSM's); the
Transformer's KV cache grows by one slot per token, so its step cannot be one graph.
"""

import torch
import torch.utils._pytree as pytree

from .generate import ModelRunner
from .programs import DecodeProgram


class CUDAGraphStep:
    """``model``'s decode step for the N sequences of ``state``, captured into one CUDA graph.

    ``step(tokens)``: tokens (N,) int → logits (N, V) (a static buffer, overwritten by the next
    call), advancing ``self.state`` (the static state buffers) in place. ``load(state)`` copies
    another state of the same shapes into the buffers.
    """

    def __init__(self, model: torch.nn.Module, state, warmup: int = 2):
        leaves = pytree.tree_leaves(state)
        if not leaves or any(t.device.type != "cuda" for t in leaves):
            raise ValueError("state: expected the tensors of a decode state on a CUDA device")
        self.model = model
        self._decode = DecodeProgram(model)
        self.tokens = torch.zeros(leaves[0].shape[1], dtype=torch.int64, device=leaves[0].device)
        self.state = pytree.tree_map(torch.clone, state)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: lazy inits, allocator pools
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._run()
        self.load(state)

    @torch.no_grad()
    def _run(self) -> torch.Tensor:
        logits, new_state = self._decode(self.tokens, self.state)
        new_leaves = pytree.tree_leaves(new_state)
        buffers = pytree.tree_leaves(self.state)
        if [t.shape for t in new_leaves] != [t.shape for t in buffers]:
            raise ValueError(
                f"model: a CUDA-graph decode needs a state of fixed shapes, but "
                f"{type(self.model).__name__}'s decode step changes them "
                f"({[tuple(t.shape) for t in buffers]} -> {[tuple(t.shape) for t in new_leaves]})")
        for buffer, new in zip(buffers, new_leaves):
            if new is not buffer:
                buffer.copy_(new)
        return logits

    def load(self, state) -> None:
        for buffer, value in zip(pytree.tree_leaves(self.state), pytree.tree_leaves(state)):
            buffer.copy_(value)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


class CUDAGraphRunner(ModelRunner):
    """``ModelRunner`` whose decode steps replay a ``CUDAGraphStep`` (prefill stays eager).

    The graph is captured at the first step and again only when the number of sequences
    changes; a state other than the one last returned is first copied into the buffers.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        if self.device.type != "cuda":
            raise ValueError(f"cuda_graph: needs the model on a CUDA device, got {self.device}")
        self._graph = None

    def step(self, tokens: torch.Tensor, state):
        if self._graph is None or self._graph.tokens.shape != tokens.shape:
            self._graph = CUDAGraphStep(self.model, state)
        elif state is not self._graph.state:
            self._graph.load(state)
        return self._graph(tokens), self._graph.state
