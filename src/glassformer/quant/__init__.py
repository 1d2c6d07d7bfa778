"""glassformer.quant."""
