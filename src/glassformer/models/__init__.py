"""Model families, each assembled from ``glassformer.nn``."""
