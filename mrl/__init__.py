"""mrl: Matryoshka Representation Learning in PyTorch, with Lightning and Hydra on top.

The core (`MRLHead`, `MatryoshkaLoss`, `MatryoshkaContrastiveLoss`, `validate_nesting`) imports
only PyTorch; see `mrl.core`.
"""

from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.heads import MRLHead
from mrl.core.losses import MatryoshkaLoss
from mrl.core.nesting import halving_nesting, validate_nesting

__all__ = [
    "MRLHead",
    "MatryoshkaContrastiveLoss",
    "MatryoshkaLoss",
    "halving_nesting",
    "validate_nesting",
]
__version__ = "0.1.0"
