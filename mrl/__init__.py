"""mrl: Matryoshka Representation Learning in PyTorch, with Lightning and Hydra on top.

`mrl.load(path)` opens a trained model for `encode` and `classify` (see `mrl.inference`). It
needs the `train` extra (`pip install 'mrl[train]'`, see `mrl.extras`) and is imported on first
use, so `import mrl` stays free of Lightning and Hydra.

The core (`MRLHead`, `MatryoshkaLoss`, `MatryoshkaContrastiveLoss`, `Matryoshka2DLoss`,
`SimilarityDistillationLoss`, `MatryoshkaAdaptor`, `validate_nesting`) imports only PyTorch and
needs no extra (`pip install mrl`); see `mrl.core`.
"""

from mrl.core.adaptor import MatryoshkaAdaptor
from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.distill import SimilarityDistillationLoss
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
    "SimilarityDistillationLoss",
    "halving_nesting",
    "load",
    "validate_nesting",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `load` needs the training stack (Lightning, Hydra): imported only when asked for.
    if name == "load":
        from mrl.extras import missing_message

        message = missing_message("mrl.load", "train")
        if message is not None:
            raise ModuleNotFoundError(message)
        from mrl.inference import load

        return load
    raise AttributeError(f"module 'mrl' has no attribute {name!r}")
