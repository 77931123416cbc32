"""Data: tables (TableSchema), whole-batch loading (BatchLoader), reading files, built-in examples."""

from torchkeep.data.loader import BatchLoader, DatasetLoader
from torchkeep.data.table import TableSchema
from torchkeep.data.text import TextColumn, Vocab, tokenize

__all__ = ["BatchLoader", "DatasetLoader", "TableSchema", "TextColumn", "Vocab", "tokenize"]
