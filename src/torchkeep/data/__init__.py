"""Data: tables (TableSchema), whole-batch loading (BatchLoader), reading files, built-in examples."""

from torchkeep.data.loader import BatchLoader, DatasetLoader
from torchkeep.data.table import TableSchema

__all__ = ["BatchLoader", "DatasetLoader", "TableSchema"]
