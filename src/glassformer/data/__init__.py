"""glassformer.data."""
