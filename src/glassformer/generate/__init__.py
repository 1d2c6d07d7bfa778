"""glassformer.generate."""
