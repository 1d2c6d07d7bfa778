"""glassformer: the transformer family built from scratch in PyTorch, each part checked against a reference."""

__version__ = "0.1.0"
