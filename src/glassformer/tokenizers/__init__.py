"""glassformer.tokenizers."""
