"""Transfer learning between image models: the head's rows follow labels, not positions.

Output i of a classifier head means label i of its run, and two runs can have different labels with
the same count (digits 0-4 and 5-9 both give 5 outputs). Copying `head.*` by name and shape would
hand every class another class's row. Here the final linear layer's weight rows and bias entries
are copied by label: a label both runs have keeps its pretrained row, a label new to this run keeps
its fresh initialisation. A binary head is copied when both runs have the same two labels (negated
when the positive one is the other label); a regression head when both predict the same target
(rescaled from the source's target mean/std to this run's, so it predicts the same values).

Normalization buffers (`normalize.mean` / `normalize.std`): the pretrained run's are kept. The
backbone's weights were fitted to pixels normalized by those statistics, and the model applies its
own buffers at training, export and serve time alike, so keeping them gives the new run's pixels the
same meaning the pretrained features were trained on; this run's own statistics are in its
schema.json only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchkeep.data.images import ImageSchema, is_image_schema
from torchkeep.data.table import TargetSpec
from torchkeep.training.transfer import Adapt, Pretrained

HEAD = "head"


def source_schema(pretrained: Pretrained) -> ImageSchema | None:
    """The source's ImageSchema: a bundle's preprocessor, or a run directory's schema.json."""
    schema = (pretrained.preprocessor or {}).get("schema")
    if not isinstance(schema, dict) or not is_image_schema(schema):
        return None
    return ImageSchema.from_dict(schema)


Head = tuple[torch.Tensor, torch.Tensor] | None  # this run's (weight, bias), or None: keep the fresh head


def _classes(old: TargetSpec, new: TargetSpec, weight: torch.Tensor, bias: torch.Tensor, fresh_weight: torch.Tensor,
             fresh_bias: torch.Tensor) -> tuple[Head, str]:
    position = {label: i for i, label in enumerate(old.labels)}
    pairs = [(i, position[label]) for i, label in enumerate(new.labels) if label in position]
    note = f"head rows copied by label: {len(pairs)} of {len(new.labels)} labels known to both runs"
    if not pairs:  # nothing pretrained in it: a new head (and no backbone_lr_mult for it)
        return None, note
    weight_out, bias_out = fresh_weight.detach().clone(), fresh_bias.detach().clone()
    rows, source_rows = (torch.tensor(side) for side in zip(*pairs, strict=True))
    weight_out[rows] = weight[source_rows].to(weight_out.dtype)
    bias_out[rows] = bias[source_rows].to(bias_out.dtype)
    return (weight_out, bias_out), note


def _head(old: TargetSpec, new: TargetSpec, weight: torch.Tensor, bias: torch.Tensor, fresh_weight: torch.Tensor,
          fresh_bias: torch.Tensor) -> tuple[Head, str]:
    """This run's head from the source's, and a note saying what was done."""
    if old.task == new.task == "multiclass":
        return _classes(old, new, weight, bias, fresh_weight, fresh_bias)
    if old.task == new.task == "binary":
        if list(old.labels) == list(new.labels):
            return (weight, bias), "binary head copied: the same two labels"
        if list(old.labels) == list(reversed(new.labels)):
            # the logit of the other label is minus this one's
            return (-weight, -bias), "binary head copied, negated: the same two labels, the other one positive"
    if old.task == new.task == "regression" and old.name == new.name:
        # The head predicts the standardized target: rescale so that it predicts the same values in this run's units.
        return ((weight * (old.std / new.std), (bias * old.std + old.mean - new.mean) / new.std),
                "regression head copied, rescaled to this run's target mean/std")
    old_labels, new_labels = (f" {target.labels}" if target.labels else "" for target in (old, new))
    return None, f"head not copied: the source predicts {old.task} {old.name}{old_labels}, this run {new.task} {new.name}{new_labels}"


def head_aligner(schema: ImageSchema) -> Adapt:
    """An `adapt` for `load_pretrained`: the source head's rows in this schema's label order (labels new
    to this run keep the model's fresh rows); no head at all when the labels cannot be matched."""

    def adapt(pretrained: Pretrained, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
        state = model.state_dict()
        keys = (f"{HEAD}.weight", f"{HEAD}.bias")
        weights = dict(pretrained.weights)
        notes = []
        if all(key in weights for key in keys) and all(key in state for key in keys) \
                and weights[keys[0]].shape[1:] == state[keys[0]].shape[1:]:  # else reported as skipped, both shapes
            old = source_schema(pretrained)
            weight, bias = (weights.pop(key) for key in keys)
            if old is None or old.target is None or schema.target is None:
                notes.append("head not copied: the source has no labels to match its rows by")
            else:
                head, note = _head(old.target, schema.target, weight, bias, state[keys[0]], state[keys[1]])
                if head is not None:
                    weights[keys[0]], weights[keys[1]] = head
                notes.append(note)
        buffers = [f"normalize.{name}" for name in ("mean", "std")]
        if all(key in weights and key in state and weights[key].shape == state[key].shape for key in buffers):
            notes.append("normalization: the pretrained run's mean/std kept (its backbone was trained on inputs"
                         " normalized by them)")
        return weights, notes

    return adapt


def transfer_adapter(schema: Any) -> Adapt | None:
    """head_aligner for an image schema, else None."""
    return head_aligner(schema) if isinstance(schema, ImageSchema) else None
