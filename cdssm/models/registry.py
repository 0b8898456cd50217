"""The model architectures by name: what ``config.json``'s "arch" and the CLI's ``--arch`` mean."""

from torch import nn

from .cdssm import CDSSMForCausalLM
from .transformer import TransformerForCausalLM

ARCHITECTURES = {cls.arch: cls for cls in (CDSSMForCausalLM, TransformerForCausalLM)}


def build_model(arch: str, d_model: int, n_layers: int, context_length: int,
                vocab_size: int) -> nn.Module:
    """A freshly initialised LM of architecture ``arch`` sized by the four numbers."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: expected one of {sorted(ARCHITECTURES)}, got {arch!r}")
    cls = ARCHITECTURES[arch]
    return cls(cls.config_class(d_model, n_layers, context_length, vocab_size))
