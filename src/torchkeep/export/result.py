"""What every export returns, and where its file goes: shared by the table, image and own-model exports."""

from __future__ import annotations

from dataclasses import dataclass, field

from torchkeep.errors import ConfigError
from torchkeep.export.formats import FORMATS, ExportFormat
from torchkeep.export.parity import Parity

FORMAT_NAMES = ("bundle", *FORMATS)


@dataclass(kw_only=True)
class ExportResult:
    format: str
    path: str  # the bundle directory, or the model file
    parity: Parity
    files: dict[str, int] = field(default_factory=dict)  # every file written -> size in bytes


def target_paths(out: str, export_format: ExportFormat) -> tuple[str, str]:
    """(directory, file name) of the export: `out` itself when it ends with the format's suffix."""
    stripped = out.rstrip("/")
    if stripped.endswith(export_format.suffixes):
        directory, _, name = stripped.rpartition("/")
        if not name or directory.endswith(":/"):
            raise ConfigError(f"--out {out}: names a bucket, not a file")
        return directory or ".", name
    return stripped, export_format.file_name
