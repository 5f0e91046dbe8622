"""mrl: Matryoshka Representation Learning in PyTorch, with Lightning and Hydra on top.

The core (`MRLHead`, `MatryoshkaLoss`, `validate_nesting`) imports only PyTorch.
"""

from mrl.core.heads import MRLHead
from mrl.core.losses import MatryoshkaLoss
from mrl.core.nesting import halving_nesting, validate_nesting

__all__ = ["MRLHead", "MatryoshkaLoss", "halving_nesting", "validate_nesting"]
__version__ = "0.1.0"
