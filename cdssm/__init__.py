"""cdssm: the Cayley-Delta State Space Model as a torch.compile-native PyTorch package."""

from . import models, ops
from .config import CDSSMConfig

__version__ = "0.1.0"
