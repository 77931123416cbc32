"""Exports of a trained model: `exporter.export` writes a bundle (torchkeep/bundle.py) or a class-free
format (formats.py), each after a parity check (parity.py); images.py and own_model.py are the
image models' and own models' variants."""

from torchkeep.bundle import read_bundle, write_bundle

__all__ = ["read_bundle", "write_bundle"]
