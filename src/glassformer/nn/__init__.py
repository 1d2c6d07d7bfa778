"""glassformer.nn."""
