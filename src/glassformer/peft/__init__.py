"""glassformer.peft."""
