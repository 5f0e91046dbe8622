"""Matryoshka representation learning for text: Hugging Face text encoders, the Matryoshka
contrastive loss, WordNet 3.0 tasks, their data and Lightning modules, a vision-language dual
encoder, sentence-transformers export and the reverse-dictionary benchmark.

Submodules import what they need on first use; `mrl.text.losses` and `mrl.text.wordnet` need only
PyTorch and NumPy. Install the dependencies with `pip install -e .[text]`.
"""
