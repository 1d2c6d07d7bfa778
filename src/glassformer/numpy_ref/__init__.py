"""glassformer.numpy_ref."""
