"""Matryoshka representation learning for text: Hugging Face text encoders, WordNet 3.0 tasks,
their data and Lightning modules, a vision-language dual encoder and sentence-transformers export
(the Matryoshka contrastive loss itself is core maths, `mrl.core.contrastive`).

Submodules import what they need on first use; `mrl.text.wordnet` needs only NumPy. Install the
dependencies with `pip install -e .[text]`.
"""
