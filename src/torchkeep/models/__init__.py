"""Models torchkeep builds from config; any nn.Module can also be trained through `fit()`."""

from torchkeep.models.build import build_model, loss_for_task
from torchkeep.models.tabular import EntityEmbeddingMLP, TabularModelConfig

__all__ = ["EntityEmbeddingMLP", "TabularModelConfig", "build_model", "loss_for_task"]
