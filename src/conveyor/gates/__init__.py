"""Gates: named checks with a verdict and evidence that a candidate must pass to go further."""
