"""The model registry: versions with lineage, aliases per environment, safe model files."""
