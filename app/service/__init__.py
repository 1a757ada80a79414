"""Service layer: FastAPI app, TLS, settings, metrics, logging and the command line."""
