"""Language models built from cdssm's ops."""

from .cdssm import CDSSMBlock, CDSSMForCausalLM, CDSSMState
from .parameters import ParameterCounts, count_parameters

__all__ = ["CDSSMBlock", "CDSSMForCausalLM", "CDSSMState", "ParameterCounts", "count_parameters"]
