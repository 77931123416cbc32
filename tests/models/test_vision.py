"""Image models: what they take and give, stable parameter names, and exports of the CNN that answer
like the eager model (TorchScript, torch.export with a dynamic batch, ONNX)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from torchkeep.models.build import build_model
from torchkeep.models.vision import DEFAULT_WIDTHS, MAX_WIDTH, SMALLEST_MAP, default_widths

ARGS = {"channels": 1, "height": 8, "width": 8, "out_features": 10, "mean": [0.3], "std": [0.4], "dropout": 0.1}


def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("image_cnn", {**ARGS, "widths": [8, 16], "convs_per_block": 2})
    with torch.no_grad():  # non-trivial batch-norm statistics, so that eval mode is really exercised
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def pixels(count: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_models_take_uint8_pixels_and_normalize_inside() -> None:
    model = cnn()
    images = pixels(4)
    assert model(images).shape == (4, 10)
    assert torch.allclose(model(images), model(images.float()))  # uint8 or float pixel values 0-255
    names = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert names == {"features", "head"}  # what --freeze 'features.*' targets
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())  # saved with the weights
    mlp = build_model("image_mlp", {**ARGS, "hidden_sizes": [32], "out_features": 1})
    assert mlp(images).shape == (4,)  # one output (binary, regression): [N]


def test_cnn_exports_answer_like_the_eager_model() -> None:
    model, example, other = cnn(), pixels(4), pixels(7, seed=2)  # a batch size other than the traced one
    want = model(other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(model), buffer)
        scripted = torch.jit.load(io.BytesIO(buffer.getvalue()))
    assert torch.allclose(scripted(other), want, atol=1e-5)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes={"image": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    assert torch.allclose(torch.export.load(io.BytesIO(buffer.getvalue())).module()(other), want, atol=1e-5)
    pytest.importorskip("onnxruntime")
    import onnxruntime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(model, (example,), None, input_names=["image"], output_names=["output"],
                                         dynamic_shapes={"image": {0: batch}}, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(onnx_program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": other.numpy()})[0])
    assert torch.allclose(got, want, atol=1e-4)


def test_a_flatten_head_sees_the_whole_last_feature_map() -> None:
    torch.manual_seed(0)
    model = build_model("image_cnn", {**ARGS, "widths": [8, 16], "pool": "flatten"}).eval()
    assert model.head.in_features == 16 * 2 * 2  # two 2x2 poolings of 8x8: a 2x2 map of 16 channels
    assert model(pixels(3)).shape == (3, 10)
    assert build_model("image_cnn", {**ARGS, "widths": [8, 16]}).head.in_features == 16  # avg: one per channel
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (pixels(2),), dynamic_shapes={"image": {0: batch}})
    assert torch.allclose(program.module()(pixels(5, seed=3)), model(pixels(5, seed=3)), atol=1e-5)


def test_the_pool_setting_is_checked() -> None:
    from torchkeep.errors import ConfigError
    from torchkeep.models.vision import VisionModelConfig

    with pytest.raises(ConfigError, match="vision.pool must be avg"):
        VisionModelConfig(pool="max")


@pytest.mark.parametrize(("height", "width", "widths"), [
    (8, 8, [32, 64]), (16, 16, [32, 64]), (28, 28, [32, 64, 128]), (32, 32, [32, 64, 128]), (20, 64, [32, 64, 128]),
    (64, 64, [32, 64, 128, 256]), (224, 224, [32, 64, 128, 256, 256, 256]), (1, 1, [32, 64]),
])
def test_default_widths_add_a_block_per_halving_of_the_shorter_side(height, width, widths) -> None:
    assert default_widths(height, width) == widths
    side = min(height, width)
    for _ in widths:
        side = side // 2 if side >= 2 else side
    assert side <= SMALLEST_MAP or len(widths) == len(DEFAULT_WIDTHS)  # the last map is a few pixels at most
    assert max(widths) <= MAX_WIDTH
