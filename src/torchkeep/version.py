"""The package version, in one place (the root package, bundles and `--version` read it)."""

__version__ = "0.1.0"
