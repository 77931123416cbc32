"""Image transfer: the head's rows follow labels, the pretrained normalization stays, and a head whose
labels cannot be matched starts fresh."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from torchkeep.data.images import ImageSchema
from torchkeep.data.table import TargetSpec
from torchkeep.models.vision import SmallCNN
from torchkeep.run.images_transfer import head_aligner
from torchkeep.training.transfer import Pretrained, load_pretrained


def schema(target: TargetSpec, mean: float = 0.3, std: float = 0.2) -> ImageSchema:
    return ImageSchema(height=8, width=8, channels=1, mean=[mean], std=[std], target=target)


def classes(*labels: object) -> TargetSpec:
    return TargetSpec(name="label", task="multiclass", kind="integer", labels=list(labels))


def model_for(image_schema: ImageSchema, seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    assert image_schema.target is not None
    return SmallCNN(channels=1, height=8, width=8, out_features=image_schema.target.output_size,
                    mean=image_schema.mean, std=image_schema.std, widths=[4], convs_per_block=1)


def pretrained_from(image_schema: ImageSchema, seed: int = 0) -> Pretrained:
    """A trained-looking source as `read_pretrained` gives a run directory: its weights and schema."""
    weights = {k: v.clone() for k, v in model_for(image_schema, seed).state_dict().items()}
    return Pretrained("runs/source", "bundle", weights, {"kind": "image", "schema": image_schema.to_dict()})


def test_head_rows_follow_labels_and_new_labels_keep_their_fresh_rows():
    source = pretrained_from(schema(classes(0, 1, 2, 3, 4)))
    model = model_for(schema(classes(3, 4, 5, 6, 7)), seed=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, source, adapt=head_aligner(schema(classes(3, 4, 5, 6, 7))))
    assert "head rows copied by label: 2 of 5 labels known to both runs" in report.notes
    head_weight, head_bias = model.head.weight.detach(), model.head.bias.detach()
    # labels 3 and 4 are rows 3, 4 in the source and rows 0, 1 here
    assert torch.equal(head_weight[:2], source.weights["head.weight"][3:5])
    assert torch.equal(head_bias[:2], source.weights["head.bias"][3:5])
    assert torch.equal(head_weight[2:], fresh["head.weight"][2:]) and torch.equal(head_bias[2:], fresh["head.bias"][2:])
    assert torch.equal(model.features[0].weight, source.weights["features.0.weight"])


def test_no_shared_label_leaves_a_new_head_that_counts_as_not_pretrained():
    new = schema(classes(5, 6, 7, 8, 9))
    model = model_for(new, seed=1)
    fresh_weight = model.head.weight.detach().clone()
    report = load_pretrained(model, pretrained_from(schema(classes(0, 1, 2, 3, 4))), adapt=head_aligner(new))
    assert "head rows copied by label: 0 of 5 labels known to both runs" in report.notes
    assert torch.equal(model.head.weight.detach(), fresh_weight)
    assert {"head.weight", "head.bias"} <= set(report.new)
    assert not {"head.weight", "head.bias"} & set(report.pretrained_parameters)  # backbone_lr_mult leaves it alone


def test_a_binary_head_with_the_labels_swapped_is_negated_and_predicts_the_same():
    old = schema(TargetSpec(name="label", task="binary", kind="string", labels=["cat", "dog"]))
    new = schema(TargetSpec(name="label", task="binary", kind="string", labels=["dog", "cat"]))
    source_model = model_for(old, seed=0).eval()
    source = Pretrained("runs/source", "bundle", dict(source_model.state_dict()), {"kind": "image", "schema": old.to_dict()})
    model = model_for(new, seed=1).eval()
    report = load_pretrained(model, source, adapt=head_aligner(new))
    assert any("negated" in note for note in report.notes)
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    # P(dog) here is 1 - P(dog) there
    torch.testing.assert_close(torch.sigmoid(model(images)), 1 - torch.sigmoid(source_model(images)))


def test_a_regression_head_is_rescaled_to_this_runs_target_statistics():
    old = schema(TargetSpec(name="label", task="regression", mean=10.0, std=2.0))
    new = schema(TargetSpec(name="label", task="regression", mean=4.0, std=5.0))
    source_model = model_for(old, seed=0).eval()
    source = Pretrained("runs/source", "bundle", dict(source_model.state_dict()), {"kind": "image", "schema": old.to_dict()})
    model = model_for(new, seed=1).eval()
    load_pretrained(model, source, adapt=head_aligner(new))
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(model(images) * 5.0 + 4.0, source_model(images) * 2.0 + 10.0)


@pytest.mark.parametrize("new_target", [
    TargetSpec(name="label", task="binary", kind="string", labels=["ant", "bee"]),
    TargetSpec(name="label", task="regression", mean=0.0, std=1.0),
])
def test_a_head_of_other_labels_or_another_task_starts_fresh(new_target):
    old = schema(TargetSpec(name="label", task="binary", kind="string", labels=["cat", "dog"]))
    new = schema(new_target)
    model = model_for(new, seed=1)
    fresh_weight = model.head.weight.detach().clone()
    report = load_pretrained(model, pretrained_from(old), adapt=head_aligner(new))
    assert torch.equal(model.head.weight.detach(), fresh_weight)
    assert any(note.startswith("head not copied: the source predicts binary label") for note in report.notes)


def test_a_weights_file_without_labels_loads_its_backbone_but_not_its_head(tmp_path):
    old, new = schema(classes(0, 1, 2)), schema(classes(0, 1, 2))
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model_for(old, seed=0).state_dict().items()}, str(path))
    model = model_for(new, seed=1)
    fresh_weight = model.head.weight.detach().clone()
    report = load_pretrained(model, str(path), adapt=head_aligner(new))
    assert "head not copied: the source has no labels to match its rows by" in report.notes
    assert torch.equal(model.head.weight.detach(), fresh_weight)
    assert "features.0.weight" in report.loaded


def test_the_pretrained_normalization_is_kept():
    new = schema(classes(0, 1), mean=0.7, std=0.4)
    model = model_for(new, seed=1)
    report = load_pretrained(model, pretrained_from(schema(classes(0, 1), mean=0.3, std=0.2)), adapt=head_aligner(new))
    assert any(note.startswith("normalization: the pretrained run's mean/std kept") for note in report.notes)
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.3])
    assert model.normalize.std.flatten().tolist() == pytest.approx([0.2])
