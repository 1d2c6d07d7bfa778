"""glassformer.train."""
