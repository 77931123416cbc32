"""Exports of a trained model. The bundle is what `predict` and serving load; `exporter.export`
writes it and the class-free formats (formats.py), each after a parity check (parity.py)."""

from torchkeep.export.bundle import read_bundle, write_bundle

__all__ = ["read_bundle", "write_bundle"]
