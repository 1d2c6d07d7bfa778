"""glassformer.viz."""
