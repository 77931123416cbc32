"""Models torchkeep builds from config; any nn.Module can also be trained through `fit()`."""

from torchkeep.models.build import build_model, loss_for_task
from torchkeep.models.tabular import EntityEmbeddingMLP, TabularModelConfig
from torchkeep.models.text import TextTableMLP

__all__ = ["EntityEmbeddingMLP", "TabularModelConfig", "TextTableMLP", "build_model", "loss_for_task"]
