"""The CD-SSM language model (spec/model.md): ``CDSSMBlock`` and ``CDSSMForCausalLM``.

Notation: B batch, T (= L) tokens, d model width, E = 2d channels, H heads of D = 64, P state
pairs, N sequences (B, or the number of packed documents with ``cu_seqlens``), n layers.
The forward is functional: it reads the ``ema`` buffers and returns the new recurrent state; the
trainer updates ``ema`` with ``update_state_energy_ema`` once per optimizer step.
"""

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from ..config import CDSSMConfig
from ..ops import causal_conv1d_silu, chunk_delta_scan, recurrent_delta_scan
from ..ops.approx_delta_scan import approx_chunk_delta_scan
from ..ops.dynamics import adaptive_timestep, dynamics_dtype, fixed_timestep, scan_inputs
from .layers import RMSNorm
from .lm_loss import chunked_causal_lm_loss
from .outputs import CausalLMOutput, check_logit_positions
from .recompute import selective_recompute
from .pretrained import PretrainedMixin


class CDSSMState(NamedTuple):
    """Recurrent state after a sequence's last token (what prefill returns and decode carries).

    conv: (n_layers, N, E, W − 1) in the activation dtype: each block's last W − 1 conv inputs,
        oldest first.
    ssm: (n_layers, N, H, 2P, D) fp32 (fp64 for a fp64 model): each block's scan state, pair p in
        rows 2p (real) and 2p + 1 (imaginary).
    """

    conv: torch.Tensor
    ssm: torch.Tensor


# Serialisable pytree node (exported programs with a state argument record it by this name).
pytree._register_namedtuple(CDSSMState, serialized_type_name="cdssm.models.CDSSMState")


class BlockOutput(NamedTuple):
    hidden: torch.Tensor  # (B, T, d) X + Δ
    conv_state: Optional[torch.Tensor]  # (N, E, W − 1) when a state was given, else None
    ssm_state: Optional[torch.Tensor]  # (N, H, 2P, D) when a state was given, else None
    state_energy: torch.Tensor  # (H,) detached: mean over sequences of the chunk-end ‖S‖²_F
    mean_utility: torch.Tensor  # () mean of υ, differentiable (the metabolic loss)


# ---- initialisation ---------------------------------------------------------------------------
def spectral_band(config: CDSSMConfig, layer: int) -> tuple:
    """(bs, be), the log-timescale band of layer i (0-based): R = ln Lc, bw = R/2,
    bs = i/max(n − 1, 1)·(R − bw), be = bs + bw."""
    R = math.log(config.context_length)
    bw = R / 2
    bs = layer / max(config.n_layers - 1, 1) * (R - bw)
    return bs, bs + bw


def _band_points(low: float, high: float, count: int, spread: bool) -> torch.Tensor:
    """(count,) float64: linspace(low, high, count), or every point at (low + high)/2 when not
    ``spread`` (the ``spectral_init=False`` ablation)."""
    if spread:
        return torch.linspace(low, high, count, dtype=torch.float64)
    return torch.full((count,), (low + high) / 2, dtype=torch.float64)


def spectral_timescales(config: CDSSMConfig, layer: int) -> torch.Tensor:
    """θ (H, P) float64 of layer i: θ_{h,p} = exp(linspace(bs, be, H·P)[p·H + h]).
    Deeper layers remember longer. With ``spectral_init=False`` every θ = e^{(bs + be)/2}."""
    H, P = config.n_heads, config.state_pairs
    bs, be = spectral_band(config, layer)
    log_theta = _band_points(bs, be, H * P, config.spectral_init)  # index p·H + h
    return log_theta.exp().view(P, H).T


def spectral_dynamics_bias(config: CDSSMConfig, layer: int) -> torch.Tensor:
    """dynamics_proj.bias (2PH,) float64 of layer i: [α-bias (H, P), ω-bias (H, P)] head-major.

    α-bias = log(exp(1/θ) − 1) (softplus⁻¹, so α = 1/θ at init). ω-bias: the frequencies
    exp(linspace(ln f_min, ln f_max, H·P)), f_min = e^{−be}, f_max = min(0.5, e^{−bs}), assigned in
    reverse timescale order: the slowest timescale gets the lowest frequency. With
    ``spectral_init=False`` every frequency is √(f_min·f_max), the log-band's middle.
    """
    H, P = config.n_heads, config.state_pairs
    bs, be = spectral_band(config, layer)
    alpha_bias = torch.log(torch.expm1(1.0 / spectral_timescales(config, layer)))
    freqs = torch.exp(_band_points(-be, math.log(min(0.5, math.exp(-bs))), H * P,
                                   config.spectral_init))  # ascending
    omega_bias = freqs.flip(0).view(P, H).T  # timescale index p·H + h ascends: frequency descends
    return torch.cat((alpha_bias.flatten(), omega_bias.flatten()))


def ema_decay(config: CDSSMConfig, layer: int) -> torch.Tensor:
    """d (H,) float64: d_h = clamp(1 − 1/θ_h, 0.9, 0.999), θ_h the geometric mean of the head's
    spectral timescales over its pairs."""
    theta_h = spectral_timescales(config, layer).log().mean(1).exp()
    return (1.0 - 1.0 / theta_h).clamp(0.9, 0.999)


def l2_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / √(Σ x² + eps) over the last dim, in fp32 (fp64 for fp64), returned in x's dtype."""
    xf = x.to(dynamics_dtype(x))
    return (xf * torch.rsqrt(xf.square().sum(-1, keepdim=True) + eps)).to(x.dtype)


# ---- the block --------------------------------------------------------------------------------
class CausalDepthwiseConv(nn.Module):
    """Depthwise causal conv1d + SiLU over (B, T, E): weight (E, W), bias (E); windows never cross
    ``cu_seqlens`` boundaries (the ``causal_conv1d_silu`` op)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, width))
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x, cu_seqlens=None, conv_state=None):
        """x (B, T, E) → (y (B, T, E), the final conv state (N, E, W − 1) when ``conv_state``
        (N, E, W − 1) was given, else None)."""
        return causal_conv1d_silu(x, self.weight, self.bias, cu_seqlens, conv_state,
                                  output_conv_state=conv_state is not None)


class CDSSMBlock(nn.Module):
    """One pre-norm CD-SSM block, X (B, T, d) → X + Δ (spec/model.md steps 1–12)."""

    def __init__(self, config: CDSSMConfig, layer: int):
        super().__init__()
        self.config = config
        self.layer = layer
        d, E, H, P = config.d_model, config.d_inner, config.n_heads, config.state_pairs
        self.norm = RMSNorm(d, eps=config.rms_norm_eps)
        self.in_proj = nn.Linear(d, 3 * E + 2 * P * H)  # gate, xg, k_raw, v_raw
        self.conv = CausalDepthwiseConv(E, config.conv_kernel)
        self.dynamics_proj = nn.Linear(E, 2 * P * H)  # α (pre-softplus), ω
        self.log_dt_scale = nn.Parameter(torch.empty(H))
        self.selection_dt = nn.Linear(E, H, bias=False)
        # recurrence_gate=False: r ≡ 1/c, no gate parameters
        self.recurrence_gate = nn.Linear(E, H) if config.recurrence_gate else None
        self.beta_proj = nn.Linear(E, H)
        self.read_gate = nn.Linear(E, H)
        self.utility_gate = nn.Linear(E, H)
        self.W_sg = nn.Parameter(torch.empty(H, H))  # state-energy feedback into υ
        self.Q_proj = nn.Linear(E, E, bias=False)
        self.readout_proj = nn.Linear(2 * P * H, E, bias=False)
        self.group_norm = nn.GroupNorm(config.norm_groups, E, eps=config.group_norm_eps)
        self.d_skip = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, d, bias=False)
        # EMA of the state energy per head: fp32, saved, only read by the forward.
        self.register_buffer("ema", torch.zeros(H, dtype=torch.float32))
        # Recompute the elementwise work in the backward (see forward); False keeps it all.
        self.selective_recompute = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The initialisation of spec/model.md (the ema buffer is left as it is)."""
        c = self.config
        d, E, H, P, n = c.d_model, c.d_inner, c.n_heads, c.state_pairs, c.n_layers
        s_io = math.sqrt(2.0 / (d + E)) / math.sqrt(2 * n)  # s_in = s_out
        nn.init.normal_(self.in_proj.weight, std=s_io)
        nn.init.normal_(self.in_proj.weight[3 * E:], std=s_io / 8)  # v_raw rows
        nn.init.zeros_(self.in_proj.bias)
        nn.init.normal_(self.conv.weight, std=0.5)
        nn.init.zeros_(self.conv.bias)
        s_dyn = math.sqrt(1.0 / E) / math.sqrt(2 * n) / math.sqrt(n)
        nn.init.normal_(self.dynamics_proj.weight, std=s_dyn)
        self.dynamics_proj.bias.copy_(spectral_dynamics_bias(c, self.layer))
        nn.init.zeros_(self.log_dt_scale)
        gates = ((self.selection_dt, None), (self.recurrence_gate, 1.0),
                 (self.utility_gate, -1.0), (self.read_gate, math.log(2.0)), (self.beta_proj, 0.0))
        for proj, bias in (g for g in gates if g[0] is not None):
            nn.init.normal_(proj.weight, std=math.sqrt(1.0 / E))
            if bias is not None:
                nn.init.constant_(proj.bias, bias)
        nn.init.normal_(self.W_sg, std=0.01)
        self.Q_proj.weight.copy_(torch.eye(E))
        nn.init.normal_(self.readout_proj.weight, std=math.sqrt(1.0 / (2 * P * H)))
        nn.init.ones_(self.group_norm.weight)
        nn.init.zeros_(self.group_norm.bias)
        nn.init.zeros_(self.d_skip)
        nn.init.normal_(self.out_proj.weight, std=s_io)
        nn.init.ones_(self.norm.weight)

    def _in_proj(self, xn: torch.Tensor) -> tuple:
        """in_proj(xn) split into gate, xg, k_raw (E each) and v_raw (2PH).

        A plain Linear runs as two matmuls, over its rows [0, 3E) and [3E, 3E + 2PH): a 3E-wide
        output needs no row padding, so cuBLAS adds the bias in its epilogue, while Inductor pads
        the rows of a (3E + 2PH)-wide one and the bias is then first broadcast-copied into all of
        it. Another module (torchao's float8 linear) runs its own forward."""
        E = self.config.d_inner  # = H·D
        if type(self.in_proj) is not nn.Linear:
            return self.in_proj(xn).split([E, E, E, self.in_proj.out_features - 3 * E], -1)
        W, b = self.in_proj.weight, self.in_proj.bias
        gate, xg, k_raw = F.linear(xn, W[:3 * E], b[:3 * E]).split(E, -1)
        return gate, xg, k_raw, F.linear(xn, W[3 * E:], b[3 * E:])

    def _head_projections(self) -> list:
        """The E → per-head projections of x_c, in the order of the fused matmul: dynamics_proj
        (2PH), selection_dt (H), recurrence_gate (H, when enabled), beta_proj, read_gate,
        utility_gate (H each)."""
        gates = [self.recurrence_gate] if self.recurrence_gate is not None else []
        return [self.dynamics_proj, self.selection_dt, *gates, self.beta_proj, self.read_gate,
                self.utility_gate]

    @torch.no_grad()
    def update_ema(self, state_energy: torch.Tensor) -> None:
        """ema ← d·ema + (1 − d)·e, e = state_energy (H,), d = ``ema_decay`` (computed in fp64)."""
        d = ema_decay(self.config, self.layer).to(self.ema.device)
        e = state_energy.detach().to(device=self.ema.device, dtype=torch.float64)
        self.ema.copy_(d * self.ema.double() + (1.0 - d) * e)

    def forward(self, x: torch.Tensor, cu_seqlens: Optional[torch.Tensor] = None,
                conv_state: Optional[torch.Tensor] = None,
                ssm_state: Optional[torch.Tensor] = None) -> BlockOutput:
        """x (B, T, d); conv_state (N, E, W − 1) and ssm_state (N, H, 2P, D), both or neither.

        T == 1 runs the literal recurrence (the decode step), longer inputs the chunked scan.
        With gradients on and ``selective_recompute`` set (the default), the backward keeps only
        the outputs of the matmuls and the custom ops and recomputes the rest (``recompute``).
        """
        if self.selective_recompute and torch.is_grad_enabled():
            return selective_recompute(self._forward, x, cu_seqlens, conv_state, ssm_state)
        return self._forward(x, cu_seqlens, conv_state, ssm_state)

    def _forward(self, x, cu_seqlens, conv_state, ssm_state) -> BlockOutput:
        c = self.config
        B, T, _ = x.shape
        E, H, P, D = c.d_inner, c.n_heads, c.state_pairs, c.head_dim
        with_state = ssm_state is not None

        # 1–2. pre-norm, input projection: gate, xg (B, T, E), k_raw (B, T, H·D), v_raw (B, T, 2PH)
        gate, xg, k_raw, v_raw = self._in_proj(self.norm(x))
        # 3. causal conv + SiLU, per document
        x_c, new_conv_state = self.conv(xg, cu_seqlens, conv_state)  # (B, T, E)
        sdt = dynamics_dtype(x_c)

        # 4–6. every per-head projection of x_c in one matmul (E → 2PH + 4H, + H with the
        #      recurrence gate): one read of x_c instead of six; biases added in fp32
        heads = self._head_projections()
        head_lin = F.linear(x_c, torch.cat([m.weight for m in heads]))
        dyn, sel, *gate_lin = head_lin.to(sdt).split([m.out_features for m in heads], -1)
        gate_lin = [g + m.bias.to(sdt) for g, m in zip(gate_lin, heads[2:])]
        if c.recurrence_gate:
            r, gating = torch.sigmoid(gate_lin.pop(0)), c.gating_constant
        else:  # c·r ≡ 1
            r, gating = torch.ones((), dtype=sdt, device=x.device), 1.0
        beta_lin, read_lin, utility_lin = gate_lin
        # 4. α, ω (B, T, H, P); the bias (the spectrum) is added in fp32 even under autocast
        dyn = dyn + self.dynamics_proj.bias.to(sdt)
        alpha, omega = dyn.view(B, T, 2, H, P).unbind(2)
        alpha = F.softplus(alpha)
        # 5. adaptive step (B, T, H, P) (adaptive_dt=False: κ_h + softplus(selection), (B, T, H, 1))
        if c.adaptive_dt:
            dt = adaptive_timestep(
                alpha, omega, self.log_dt_scale.unsqueeze(-1), sel.unsqueeze(-1),
                dt_eps=c.dt_eps, dt_margin=c.dt_margin,
                rotation_threshold=c.rotation_threshold, rotation_width=c.rotation_width)
        else:
            dt = fixed_timestep(self.log_dt_scale.unsqueeze(-1), sel.unsqueeze(-1))
        # 6. per-head gates (B, T, H)
        beta = torch.sigmoid(beta_lin)
        read = torch.sigmoid(read_lin)
        energy_feedback = torch.mv(self.W_sg.to(sdt), self.ema.to(sdt))  # (H,) W_sg·ema
        utility = torch.sigmoid(utility_lin + energy_feedback)
        # 7. scan inputs (B, T, H, P)
        decay = scan_inputs(alpha, omega, dt, r.unsqueeze(-1), gating)
        # 8. keys and queries (B, T, H, D), made unit rows by l2_normalize: inside the chunk
        #    scan's kernels as they load them (k read in place from the in_proj rows, and no
        #    normalised copy kept or recomputed for the backward), here for the other scans
        k = k_raw.view(B, T, H, D)
        q = self.Q_proj(x_c).view(B, T, H, D)
        if c.scan == "approx" or T == 1:
            q, k = l2_normalize(q, c.l2_norm_eps), l2_normalize(k, c.l2_norm_eps)
        # 9. scan: v (B, T, H, P, 2) scaled per pair, write strength β_eff = β·υ
        #    (utility="value": v scaled by υ too, β_eff = β)
        value_scale = decay.value_scale
        if c.utility == "strength":
            beta_eff = beta * utility
        else:
            value_scale, beta_eff = value_scale * utility.unsqueeze(-1), beta
        v = (v_raw.view(B, T, H, P, 2) * value_scale.unsqueeze(-1)).to(q.dtype)
        if c.scan == "approx":  # every T, decode included (the ablation has no exact T = 1 form)
            y, new_ssm_state, energy = approx_chunk_delta_scan(
                q, k, v, beta_eff, decay.log_decay, decay.phase, ssm_state,
                chunk_size=c.chunk_size, output_final_state=with_state, output_state_energy=True)
        elif T == 1:  # y (B, T, H, P, 2); the state (N, H, 2P, D)
            y, new_ssm_state = recurrent_delta_scan(
                q, k, v, beta_eff, decay.log_decay, decay.phase, ssm_state, cu_seqlens,
                output_final_state=True)
            energy = new_ssm_state.square().sum((-2, -1))  # (N, H) ‖S‖²_F
            new_ssm_state = new_ssm_state if with_state else None
        else:
            y, new_ssm_state, energy = chunk_delta_scan(
                q, k, v, beta_eff, decay.log_decay, decay.phase, ssm_state, cu_seqlens,
                chunk_size=c.chunk_size, output_final_state=with_state, output_state_energy=True,
                l2_norm_eps=c.l2_norm_eps)
        # 10. read gate and readout (B, T, 2PH) → (B, T, E); flattened as (head, pair, re/im)
        ret = (read.view(B, T, H, 1, 1) * y).to(x_c.dtype).flatten(2)
        ret = self.readout_proj(ret)
        # 11. per-token GroupNorm: statistics of one position only (causal), each of the G
        #     groups of E/G channels normalised on its own (written out: 0.14 ms less of fused
        #     kernels per block step on an H100 than F.group_norm, docs/benchmarks.md)
        groups = ret.to(sdt).view(B, T, c.norm_groups, E // c.norm_groups)
        var, mean = torch.var_mean(groups, -1, correction=0, keepdim=True)
        gn = ((groups - mean) * torch.rsqrt(var + c.group_norm_eps)).view(B, T, E)
        gn = (gn * self.group_norm.weight.to(sdt) + self.group_norm.bias.to(sdt)).to(x_c.dtype)
        # 12. output gate, skip, projection
        delta = self.out_proj(gn * F.silu(gate) + self.d_skip * x_c)  # (B, T, d)
        if with_state:
            new_conv_state = new_conv_state.to(conv_state.dtype)
        return BlockOutput(x + delta, new_conv_state, new_ssm_state, energy.detach().mean(0),
                           utility.mean())


def _is_int_tensor(t, dim: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == dim and t.dtype in (torch.int32, torch.int64)


def _describe(t) -> str:
    """What an argument is, for error messages."""
    if isinstance(t, torch.Tensor):
        return f"a {t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__


# ---- the language model -----------------------------------------------------------------------
class CDSSMForCausalLM(PretrainedMixin, nn.Module):
    """tokens → Embedding (V×d) → n CD-SSM blocks → RMSNorm → logits = h·Embᵀ (tied)."""

    config_class = CDSSMConfig
    arch = "cdssm"
    tied_weight_names = ("lm_head.weight",)

    def __init__(self, config: CDSSMConfig):
        super().__init__()
        if not isinstance(config, CDSSMConfig):
            raise ValueError(f"config: expected a CDSSMConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(CDSSMBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Embedding N(0, 1/d), final norm gain ones, every block per spec/model.md."""
        nn.init.normal_(self.embed.weight, std=math.sqrt(1.0 / self.config.d_model))
        nn.init.ones_(self.norm.weight)
        for block in self.blocks:
            block.reset_parameters()

    def init_state(self, batch_size: int, device=None, dtype=None) -> CDSSMState:
        """Zero state for ``batch_size`` sequences (an int, or a symbolic size while exporting).
        dtype: the activation dtype of the conv state (default: the parameters'); the scan state
        is fp32 (fp64 for fp64)."""
        if (not isinstance(batch_size, (int, torch.SymInt)) or isinstance(batch_size, bool)
                or batch_size < 1):
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        c = self.config
        device = self.embed.weight.device if device is None else device
        dtype = self.embed.weight.dtype if dtype is None else dtype
        n, N = c.n_layers, batch_size
        conv = torch.zeros(n, N, c.d_inner, c.conv_kernel - 1, device=device, dtype=dtype)
        ssm = torch.zeros(n, N, c.n_heads, 2 * c.state_pairs, c.head_dim, device=device,
                          dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        return CDSSMState(conv, ssm)

    @torch.no_grad()
    def update_state_energy_ema(self, state_energy: torch.Tensor) -> None:
        """Per block, ema_h ← d_h·ema_h + (1 − d_h)·e_h with d_h = clamp(1 − 1/θ_h, 0.9, 0.999).

        state_energy: (n_layers, H), the step's mean of ``CausalLMOutput.state_energy`` (already
        all-reduced across data-parallel ranks). Call once per optimizer step, outside compile.
        """
        c = self.config
        shape = (c.n_layers, c.n_heads)
        if not (isinstance(state_energy, torch.Tensor) and tuple(state_energy.shape) == shape):
            raise ValueError(f"state_energy: expected a tensor of shape {shape}, got "
                             f"{_describe(state_energy)}")
        for block, energy in zip(self.blocks, state_energy):
            block.update_ema(energy)

    def _check_inputs(self, input_ids, labels, cu_seqlens, state, logit_positions) -> None:
        c = self.config
        check_logit_positions(logit_positions, labels)
        if not _is_int_tensor(input_ids, 2):
            raise ValueError("input_ids: expected an int32/int64 tensor of shape (B, T), got "
                             f"{_describe(input_ids)}")
        B, T = input_ids.shape
        if labels is not None and not (_is_int_tensor(labels, 2)
                                       and labels.shape == input_ids.shape):
            raise ValueError(f"labels: expected an int tensor of input_ids' shape ({B}, {T}), got "
                             f"{_describe(labels)}")
        N = B
        if cu_seqlens is not None:
            if not (_is_int_tensor(cu_seqlens, 1) and cu_seqlens.shape[0] >= 2):
                raise ValueError("cu_seqlens: expected a 1-D int32 tensor of N + 1 >= 2 offsets, "
                                 f"got {_describe(cu_seqlens)}")
            if B != 1:
                raise ValueError("cu_seqlens: packed sequences need input_ids of batch size 1, "
                                 f"got {B}")
            N = cu_seqlens.shape[0] - 1
            if c.scan == "approx":
                raise ValueError("cu_seqlens: the scan='approx' ablation runs unpadded batches "
                                 "only (B, T); use scan='exact' for packed sequences")
        if state is not None:
            expected = CDSSMState(conv=(c.n_layers, N, c.d_inner, c.conv_kernel - 1),
                                  ssm=(c.n_layers, N, c.n_heads, 2 * c.state_pairs, c.head_dim))
            if not (isinstance(state, CDSSMState) and all(
                    isinstance(t, torch.Tensor) and t.is_floating_point()
                    and tuple(t.shape) == shape for t, shape in zip(state, expected))):
                got = (f"CDSSMState(conv {_describe(state.conv)}, ssm {_describe(state.ssm)})"
                       if isinstance(state, CDSSMState) else _describe(state))
                raise ValueError(
                    f"state: expected a CDSSMState of float tensors, conv {expected.conv} and ssm "
                    f"{expected.ssm} (N = {'documents' if cu_seqlens is not None else 'batch'}), "
                    f"got {got}")

    def forward(self, input_ids: torch.Tensor, labels: Optional[torch.Tensor] = None,
                cu_seqlens: Optional[torch.Tensor] = None,
                state: Optional[CDSSMState] = None,
                logit_positions: Optional[torch.Tensor] = None) -> CausalLMOutput:
        """input_ids (B, T) int; labels (B, T) int (shifted inside, −100 ignored); cu_seqlens
        (N + 1,) int32 with B == 1; state: a ``CDSSMState`` for N sequences to start from (prefill
        from ``init_state``, decode with T == 1), whose successor is returned; logit_positions
        (K,) int: compute logits at these positions only (e.g. each prompt's last token).

        Returns ``CausalLMOutput``: logits (B, T, V), or (B, K, V) at ``logit_positions`` (None
        with labels), loss = CE + aux_loss,
        aux_loss = λ_met · mean over layers of mean υ, state_energy (n_layers, H), mean_utility
        (n_layers,), state.
        """
        self._check_inputs(input_ids, labels, cu_seqlens, state, logit_positions)
        x = self.embed(input_ids)  # (B, T, d)
        conv_states, ssm_states, energies, utilities = [], [], [], []
        for i, block in enumerate(self.blocks):
            out = block(x, cu_seqlens, None if state is None else state.conv[i],
                        None if state is None else state.ssm[i])
            x = out.hidden
            conv_states.append(out.conv_state)
            ssm_states.append(out.ssm_state)
            energies.append(out.state_energy)
            utilities.append(out.mean_utility)
        h = self.norm(x)  # (B, T, d)
        mean_utility = torch.stack(utilities)  # (n_layers,)
        aux_loss = self.config.metabolic_weight * mean_utility.mean()
        logits = loss = None
        if labels is None:
            logits = self.lm_head(h if logit_positions is None else h[:, logit_positions])
        else:  # never the whole (B·T, V) logits
            loss = chunked_causal_lm_loss(h, self.lm_head.weight, labels.long(),
                                          cu_seqlens) + aux_loss
        new_state = None
        if state is not None:
            new_state = CDSSMState(torch.stack(conv_states), torch.stack(ssm_states))
        return CausalLMOutput(logits, loss, aux_loss, torch.stack(energies),
                              mean_utility.detach(), new_state)
