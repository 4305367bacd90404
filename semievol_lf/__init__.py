"""SemiEvol semi-supervised fine-tuning as a LlamaFactory plugin and recipe pack.

Importing this package is cheap: torch, transformers, LlamaFactory, faiss and
sentence-transformers are imported only inside the functions that need them.
"""

__version__ = "0.1.0"
