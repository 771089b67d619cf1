"""The prediction service: serves the registry's production model over FastAPI."""
