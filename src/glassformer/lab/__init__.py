"""glassformer.lab."""
