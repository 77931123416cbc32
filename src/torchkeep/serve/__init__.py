"""HTTP JSON serving of a bundle: FastAPI app, adaptive batcher, request validation (extra `serve`)."""
