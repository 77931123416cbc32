"""Exports of a trained model. The bundle is what `predict` and serving load."""

from torchkeep.export.bundle import read_bundle, write_bundle

__all__ = ["read_bundle", "write_bundle"]
