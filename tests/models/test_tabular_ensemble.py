"""The tabular MLP as a BatchEnsemble (TabM-style): k members trained at once, one loss each, their
mean served; and the task loss with label smoothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchkeep.models import EntityEmbeddingMLP
from torchkeep.models.build import TaskLoss


def ensemble(out_features: int = 1, k: int = 4) -> EntityEmbeddingMLP:
    torch.manual_seed(0)
    return EntityEmbeddingMLP(cardinalities=[5, 3], embedding_dims=[3, 2], n_continuous=4, out_features=out_features,
                              hidden_sizes=[16, 8], ensemble_size=k)


def inputs(rows: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.randint(0, 3, (rows, 2), generator=generator), torch.randn(rows, 4, generator=generator))


@pytest.mark.parametrize("out_features", [1, 3])
def test_training_gives_each_member_evaluation_their_mean(out_features: int) -> None:
    model, (categorical, continuous) = ensemble(out_features), inputs()
    members = model.train()(categorical, continuous)
    assert members.shape == ((10, 4) if out_features == 1 else (10, 4, 3))
    model.eval()
    with torch.no_grad():
        mean = model(categorical, continuous)
        # in eval mode batch norm uses running statistics: compare with the members in eval mode
        again = model.head(model.mlp(model_inputs(model, categorical, continuous)))
    assert mean.shape == ((10,) if out_features == 1 else (10, 3))
    torch.testing.assert_close(mean, again.mean(dim=1).squeeze(-1))


def model_inputs(model: EntityEmbeddingMLP, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
    parts = [embedding(categorical[:, i]) for i, embedding in enumerate(model.embeddings)]
    x = torch.cat([*parts, model.continuous_norm(continuous)], dim=1)
    return x.unsqueeze(1).expand(-1, model.ensemble_size, -1)


def test_members_start_different_and_share_the_hidden_weights() -> None:
    model = ensemble()
    first = model.mlp.layers[0]
    assert set(first.r.unique().tolist()) == {-1.0, 1.0}  # random signs: the members differ from the start
    assert first.weight.shape == (3 + 2 + 4, 16)  # one weight matrix for all members
    assert model.head.weight.shape == (4, 8, 1)  # a head per member
    members = model.train()(*inputs())
    assert not torch.allclose(members[:, 0], members[:, 1])


def test_each_member_gets_its_own_loss() -> None:
    target = torch.tensor([0.0, 1.0, 1.0])
    output = torch.randn(3, 4)
    expected = sum(F.binary_cross_entropy_with_logits(output[:, i], target) for i in range(4)) / 4
    torch.testing.assert_close(TaskLoss("binary")(output, target), expected)
    classes = torch.tensor([0, 2, 1])
    logits = torch.randn(3, 4, 3)
    expected = sum(F.cross_entropy(logits[:, i], classes) for i in range(4)) / 4
    torch.testing.assert_close(TaskLoss("multiclass")(logits, classes), expected)
    values = torch.randn(3)
    predictions = torch.randn(3, 4)
    expected = sum(F.mse_loss(predictions[:, i], values) for i in range(4)) / 4
    torch.testing.assert_close(TaskLoss("regression")(predictions, values), expected)


def test_label_smoothing_moves_targets_towards_uniform() -> None:
    output, target = torch.randn(5), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(TaskLoss("binary", 0.2)(output, target),
                               F.binary_cross_entropy_with_logits(output, target * 0.8 + 0.1))
    logits, classes = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(TaskLoss("multiclass", 0.2)(logits, classes),
                               F.cross_entropy(logits, classes, label_smoothing=0.2))


def test_an_ensemble_trains_and_its_bundle_predicts_the_same(tmp_path, make_table) -> None:
    import torchkeep
    from torchkeep.data.io import read_table

    data = tmp_path / "table.csv"
    make_table(300).write_csv(data)
    result = torchkeep.train(str(data), target="late", epochs=2, batch_size=64, ensemble_size=4,
                             run_dir=str(tmp_path / "run"), quiet=True)
    predictor = torchkeep.load(result.bundle)
    assert predictor.model.ensemble_size == 4
    frame = read_table(str(data))
    probabilities = predictor.predict(frame.head(20))
    assert probabilities.height == 20
    assert result.valid["roc_auc"] > 0.8
