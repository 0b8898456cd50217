"""The Transformer baseline: same four numbers and same interface as the CD-SSM LM.

tokens → Embedding (V×d) → n × [x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] → RMSNorm →
logits = h·Embᵀ (tied). Attention: H = d/64 heads of D = 64, rotary positions (base 10000)
restarting in every packed document; see ``attention.py`` for the SDPA / FlexAttention paths
and the KV cache (the decode state).
"""

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention, KVCache, plan_attention
from .documents import check_cu_seqlens
from .layers import RMSNorm
from .lm_loss import chunked_causal_lm_loss
from .outputs import CausalLMOutput, check_logit_positions
from .pretrained import PretrainedMixin


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TransformerConfig:
    """Four numbers; everything else derived.

    | name | formula | d=768, n=12 |
    |---|---|---|
    | head_dim D, n_heads H | 64, d/64 (d must be a multiple of 64) | 64, 12 |
    | hidden (SwiGLU) | 8d/3 rounded up to a multiple of 64 | 2048 |
    | rope_base, rms_norm_eps | 10000, 1e-5 | |
    | init_std, out_init_std | 0.02, 0.02/√(2n) (attention out, MLP down) | 0.02, 0.004082 |
    """

    d_model: int
    n_layers: int
    context_length: int
    vocab_size: int

    def __post_init__(self):
        _check_int("d_model", self.d_model, 64)
        if self.d_model % self.head_dim:
            raise ValueError(f"d_model: expected a multiple of {self.head_dim} (head_dim), "
                             f"got {self.d_model}")
        _check_int("n_layers", self.n_layers, 1)
        _check_int("context_length", self.context_length, 2)
        _check_int("vocab_size", self.vocab_size, 2)

    @property
    def head_dim(self) -> int:
        """D = 64."""
        return 64

    @property
    def n_heads(self) -> int:
        """H = d / 64."""
        return self.d_model // self.head_dim

    @property
    def hidden(self) -> int:
        """SwiGLU width: 8d/3 rounded up to a multiple of 64."""
        return -(-8 * self.d_model // (3 * 64)) * 64

    @property
    def rope_base(self) -> float:
        """Rotary base, 10000: θ_i = base^(−2i/D)."""
        return 10000.0

    @property
    def rms_norm_eps(self) -> float:
        """RMSNorm eps, 1e-5."""
        return 1e-5

    @property
    def init_std(self) -> float:
        """0.02: the std of every weight matrix and the embedding at init."""
        return 0.02

    @property
    def out_init_std(self) -> float:
        """0.02/√(2n): attention out and MLP down at init (the residual sum of 2n branches)."""
        return self.init_std / math.sqrt(2 * self.n_layers)

    def to_dict(self) -> dict:
        """The four numbers (what ``config.json`` stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TransformerConfig":
        names = set(cls.__dataclass_fields__)
        unknown, missing = set(values) - names, names - set(values)
        if unknown or missing:
            raise ValueError(f"values: expected exactly the keys {sorted(names)}, "
                             f"unknown {sorted(unknown)}, missing {sorted(missing)}")
        return cls(**values)


class SwiGLU(nn.Module):
    """y = W_down (SiLU(W_gate x) ⊙ W_up x); gate and up fused in one Linear(d, 2·hidden)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    """x + Attn(RMSNorm(x)), then + SwiGLU(RMSNorm(x))."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads, config.head_dim)
        self.mlp_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.mlp = SwiGLU(config.d_model, config.hidden)

    def forward(self, x, plan, past_k=None, past_v=None):
        a, k_cache, v_cache = self.attn(self.attn_norm(x), plan, past_k, past_v)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), k_cache, v_cache


class TransformerForCausalLM(PretrainedMixin, nn.Module):
    """Pre-norm rotary Transformer LM with the CD-SSM LM's interface.

    Init: every Linear and the embedding N(0, 0.02²); attention out and MLP down
    N(0, (0.02/√(2n))²); norm gains 1. The LM head shares the embedding's weight.
    """

    config_class = TransformerConfig
    arch = "transformer"
    tied_weight_names = ("lm_head.weight",)

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config: expected a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation described in the class docstring."""
        nn.init.normal_(self.embed.weight, std=self.config.init_std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=self.config.init_std)
            nn.init.normal_(block.mlp.gate_up.weight, std=self.config.init_std)
            nn.init.normal_(block.attn.out.weight, std=self.config.out_init_std)
            nn.init.normal_(block.mlp.down.weight, std=self.config.out_init_std)
            nn.init.ones_(block.attn_norm.weight)
            nn.init.ones_(block.mlp_norm.weight)
        nn.init.ones_(self.norm.weight)

    def init_state(self, batch_size: int, device=None, dtype=None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences: k, v (n_layers, N, H, 0, D) in
        ``dtype`` (default: the parameters' dtype), valid (N, 0) bool."""
        _check_int("batch_size", batch_size, 1)
        weight = self.embed.weight
        device = weight.device if device is None else torch.device(device)
        dtype = weight.dtype if dtype is None else dtype
        c = self.config
        k = torch.zeros(c.n_layers, batch_size, c.n_heads, 0, c.head_dim, device=device,
                        dtype=dtype)
        return KVCache(k, k.clone(), torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def forward(self, input_ids: torch.Tensor, labels: Optional[torch.Tensor] = None,
                cu_seqlens: Optional[torch.Tensor] = None,
                state: Optional[KVCache] = None,
                logit_positions: Optional[torch.Tensor] = None) -> CausalLMOutput:
        """input_ids (B, T) int; labels (B, T) int (shifted inside, −100 ignored) or None;
        cu_seqlens (N + 1,) int32 packing N documents into B = 1, or None; state: a ``KVCache``
        of B sequences (of N with cu_seqlens: document n continues sequence n) or None;
        logit_positions (K,) int: compute logits at these positions only.

        Returns ``CausalLMOutput``: logits (B, T, V) (or (B, K, V) at ``logit_positions``)
        without labels, else the mean CE loss;
        aux_loss 0; state: the extended cache when one was given.
        """
        self._check_inputs(input_ids, labels, cu_seqlens, state)
        check_logit_positions(logit_positions, labels)
        T = input_ids.shape[1]
        weight = self.embed.weight
        rope_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        plan = plan_attention(T, input_ids.device, self.config.head_dim, self.config.rope_base,
                              rope_dtype, cu_seqlens, state)
        h = self.embed(input_ids)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            past = (None, None) if state is None else (state.k[i], state.v[i])
            h, k_cache, v_cache = block(h, plan, *past)
            ks.append(k_cache)
            vs.append(v_cache)
        h = self.norm(h)
        new_state = None if state is None else KVCache(torch.stack(ks), torch.stack(vs), plan.valid)
        aux_loss = torch.zeros((), device=input_ids.device)
        logits = loss = None
        if labels is None:
            logits = self.lm_head(h if logit_positions is None else h[:, logit_positions])
        else:  # never the whole (B·T, V) logits
            loss = chunked_causal_lm_loss(h, self.lm_head.weight, labels.long(),
                                          cu_seqlens) + aux_loss
        return CausalLMOutput(logits=logits, loss=loss,
                              aux_loss=aux_loss, state_energy=None, mean_utility=None,
                              state=new_state)

    def _check_inputs(self, input_ids, labels, cu_seqlens, state) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 \
                or input_ids.dtype not in (torch.int32, torch.int64) or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids: expected an int32/int64 tensor (B, T) with T >= 1, got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}")
        if labels is not None and (not isinstance(labels, torch.Tensor)
                                   or labels.shape != input_ids.shape
                                   or labels.device != input_ids.device):
            raise ValueError(f"labels: expected a tensor of input_ids' shape "
                             f"{tuple(input_ids.shape)} on {input_ids.device}, got "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        if cu_seqlens is not None:
            check_cu_seqlens(cu_seqlens, input_ids)
        if state is not None:
            c = self.config
            N = input_ids.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
            ok = (isinstance(state, KVCache) and state.k.dim() == 5
                  and tuple(state.k.shape[:3]) == (c.n_layers, N, c.n_heads)
                  and state.k.shape[4] == c.head_dim and state.v.shape == state.k.shape
                  and state.valid.dtype == torch.bool
                  and tuple(state.valid.shape) == (N, state.k.shape[3])
                  and state.k.device == state.valid.device == input_ids.device)
            if not ok:
                raise ValueError(
                    f"state: expected a KVCache with k, v ({c.n_layers}, {N}, {c.n_heads}, S, "
                    f"{c.head_dim}) and valid ({N}, S) bool on {input_ids.device} (N = "
                    f"{'number of documents' if cu_seqlens is not None else 'batch size'}), got "
                    f"{type(state).__name__}")
