"""CDSSMConfig: four user numbers (d, n, Lc, V), the state-pair count P and the evaluation's
ablation switches; everything else derived.

Every derived constant is a property whose docstring holds its formula (spec/model.md, Config).
The ablation switches (spec/model.md § Ablation switches) default to the v1 model.
"""

import dataclasses
import math
from dataclasses import dataclass


# Ablation switches and their values, the v1 value first (spec/model.md § Ablation switches).
ABLATION_CHOICES = {
    "scan": ("exact", "approx"),
    "recurrence_gate": (True, False),
    "adaptive_dt": (True, False),
    "spectral_init": (True, False),
    "utility": ("strength", "value"),
    "metabolic": (True, False),
}


@dataclass(frozen=True)
class CDSSMConfig:
    """Configuration of a CD-SSM language model.

    Args:
        d_model: d, the residual width (2·d must be a multiple of 64).
        n_layers: n ≥ 1 blocks.
        context_length: Lc ≥ 2, the training context (sets the gating constant and the spectrum).
        vocab_size: V ≥ 2.
        state_pairs: P ≥ 1 complex state pairs per head (keyword only; P = 1 is the v1 model).

    Ablation switches (keyword only; spec/model.md § Ablation switches; the defaults are v1):
        scan: "exact" (v1) or "approx": within a chunk exact, the incoming state only decays
            (no −Γ⊙(W s0ᵀ) term); unpadded batches only (no ``cu_seqlens``).
        recurrence_gate: False sets r ≡ 1/c, so |z_eff| = |z|.
        adaptive_dt: False sets dt = κ_h + softplus(selection_dt(x_c)).
        spectral_init: False puts every head and pair at its band's middle timescale and
            frequency.
        utility: "strength" (v1: β_eff = β·υ) or "value" (υ scales v, β_eff = β).
        metabolic: False sets λ_met = 0.
    """

    d_model: int
    n_layers: int
    context_length: int
    vocab_size: int
    state_pairs: int = dataclasses.field(default=1, kw_only=True)
    scan: str = dataclasses.field(default="exact", kw_only=True)
    recurrence_gate: bool = dataclasses.field(default=True, kw_only=True)
    adaptive_dt: bool = dataclasses.field(default=True, kw_only=True)
    spectral_init: bool = dataclasses.field(default=True, kw_only=True)
    utility: str = dataclasses.field(default="strength", kw_only=True)
    metabolic: bool = dataclasses.field(default=True, kw_only=True)

    def __post_init__(self):
        minimum = {"d_model": 1, "n_layers": 1, "context_length": 2, "vocab_size": 2,
                   "state_pairs": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
            if value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value}")
        if self.d_inner % self.head_dim != 0:
            raise ValueError(f"d_model: d_inner = 2·d_model = {self.d_inner} must be a multiple "
                             f"of {self.head_dim} (d_model a multiple of 32), got d_model = "
                             f"{self.d_model}")
        for name, choices in ABLATION_CHOICES.items():
            value = getattr(self, name)
            if not any(type(value) is type(c) and value == c for c in choices):
                raise ValueError(f"{name}: expected one of {choices}, got {value!r}")

    def ablations(self) -> dict:
        """The ablation switches that differ from v1, {name: value}."""
        return {name: getattr(self, name) for name, choices in ABLATION_CHOICES.items()
                if getattr(self, name) != choices[0]}

    # ---- widths -------------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        """E = 2·d."""
        return 2 * self.d_model

    @property
    def head_dim(self) -> int:
        """D = 64."""
        return 64

    @property
    def n_heads(self) -> int:
        """H = E / 64."""
        return self.d_inner // self.head_dim

    @property
    def chunk_size(self) -> int:
        """C = 64, the scan's chunk length."""
        return 64

    @property
    def conv_kernel(self) -> int:
        """Depthwise causal conv width, 4."""
        return 4

    @property
    def norm_groups(self) -> int:
        """GroupNorm groups, 32 (contiguous channel groups of E/32)."""
        return 32

    # ---- dynamics and losses ------------------------------------------------------------------
    @property
    def gating_constant(self) -> float:
        """c = ln Lc: |z_eff| = |z|^{c·r}."""
        return math.log(self.context_length)

    @property
    def metabolic_weight(self) -> float:
        """λ_met = 1 / (ln V)³ (0 with ``metabolic=False``)."""
        return 1.0 / math.log(self.vocab_size) ** 3 if self.metabolic else 0.0

    @property
    def dynamics_lr_ratio(self) -> float:
        """ρ = min(0.5, 1/√(2n)): the dynamics parameters train at lr·ρ."""
        return min(0.5, 1.0 / math.sqrt(2 * self.n_layers))

    @property
    def timestep_base(self) -> float:
        """e_b = 2⁻⁷."""
        return 2.0 ** -7

    @property
    def rotation_threshold(self) -> float:
        """ω_th = √e_b: below it a head counts as non-rotating and dt is capped."""
        return math.sqrt(self.timestep_base)

    @property
    def dt_margin(self) -> float:
        """δ = 16·e_b: dt_max = (2 − δ)/(α + ε_dt) keeps τα < 1."""
        return 16 * self.timestep_base

    @property
    def rotation_width(self) -> float:
        """s_w = ω_th / 5: width of the soft switch w = σ((ω_th − |ω|)/s_w)."""
        return self.rotation_threshold / 5

    @property
    def dt_eps(self) -> float:
        """ε_dt = 100·e_b: dt_raw = κ/(α + |ω| + ε_dt)."""
        return 100 * self.timestep_base

    # ---- normalisation epsilons ---------------------------------------------------------------
    @property
    def rms_norm_eps(self) -> float:
        """RMSNorm eps, 1e-5."""
        return 1e-5

    @property
    def group_norm_eps(self) -> float:
        """GroupNorm eps, 1e-5."""
        return 1e-5

    @property
    def l2_norm_eps(self) -> float:
        """Key/query L2 normalisation eps, 1e-6, inside the sqrt: x / √(Σx² + eps)."""
        return 1e-6

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The user fields only (the derived constants follow from them)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CDSSMConfig":
        """Inverse of ``to_dict``; unknown or missing required keys raise ValueError."""
        fields = dataclasses.fields(cls)
        unknown = sorted(set(values) - {f.name for f in fields})
        missing = [f.name for f in fields
                   if f.default is dataclasses.MISSING and f.name not in values]
        if unknown or missing:
            raise ValueError(f"values: unknown CDSSMConfig fields {unknown}, missing {missing}")
        return cls(**values)
