"""The paper's maths in plain PyTorch: nesting lists, Matryoshka heads, the Matryoshka losses
(classification and contrastive) and the project's error types. Nothing here imports Lightning,
Hydra or anything else of the package outside `mrl.core`."""
