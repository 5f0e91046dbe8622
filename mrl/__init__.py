"""mrl: Matryoshka Representation Learning in PyTorch, with Lightning and Hydra on top.

The core (`MRLHead`, `MatryoshkaLoss`, `MatryoshkaContrastiveLoss`, `Matryoshka2DLoss`,
`MatryoshkaAdaptor`, `validate_nesting`) imports only PyTorch; see `mrl.core`.
"""

from mrl.core.adaptor import MatryoshkaAdaptor
from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.heads import MRLHead
from mrl.core.losses import MatryoshkaLoss
from mrl.core.matryoshka_2d import Matryoshka2DLoss
from mrl.core.nesting import halving_nesting, validate_nesting

__all__ = [
    "MRLHead",
    "Matryoshka2DLoss",
    "MatryoshkaAdaptor",
    "MatryoshkaContrastiveLoss",
    "MatryoshkaLoss",
    "halving_nesting",
    "validate_nesting",
]
__version__ = "0.1.0"
