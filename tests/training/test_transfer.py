"""Transfer learning through the Python API: start from another run's weights, freeze, unfreeze later.

The tables are small flights-like frames (tests/conftest.py); the pretrained run trains on one
sample, the fine-tuned runs on another, whose vocabularies are in another order.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import torchkeep
from torchkeep.data.table import TableSchema
from torchkeep.errors import CheckpointError
from torchkeep.models.build import build_model
from torchkeep.run.tables_transfer import level_aligner
from torchkeep.training.optim import OptimConfig, build_optimizer, build_scheduler
from torchkeep.training.progress import Progress
from torchkeep.training.transfer import TransferConfig, TransferPlan, load_pretrained

EPOCHS = 3
BATCHES_PER_EPOCH = 9  # 540 training rows (600 less 10% for validation) in batches of 64
# One MLP (ensemble_size 1): the tests name its layers; tests/models/test_tabular_ensemble.py covers an ensemble's.
SETTINGS = {"target": "late", "batch_size": 64, "hidden_sizes": [32, 16], "ensemble_size": 1, "seed": 5,
            "deterministic": True, "quiet": True}


pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")  # tests/conftest.py


@pytest.fixture(scope="module")
def tables(make_table, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("transfer")
    paths = {"pretrain": root / "pretrain.parquet", "finetune": root / "finetune.parquet"}
    make_table(2_000, seed=1).write_parquet(paths["pretrain"])
    make_table(600, seed=2).write_parquet(paths["finetune"])
    torchkeep.train(str(paths["pretrain"]), run_dir=str(root / "pretrained"), epochs=2, **SETTINGS)
    return {**paths, "pretrained": root / "pretrained", "root": root}


def bundle_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "bundle" / "model.safetensors")


def schema_levels(run_dir: Path, column: str) -> list:
    schema = json.loads((run_dir / "schema.json").read_text())
    return next(c["levels"] for c in schema["categorical"] if c["name"] == column)


def test_frozen_embeddings_stay_equal_to_the_pretrained_rows_level_by_level(tables, tmp_path) -> None:
    run_dir = tmp_path / "finetuned"
    torchkeep.train(str(tables["finetune"]), run_dir=str(run_dir), epochs=2, init_from=str(tables["pretrained"]),
                    freeze=["embeddings.*"], **SETTINGS)
    source, tuned = bundle_weights(tables["pretrained"]), bundle_weights(run_dir)
    report = json.loads((run_dir / "transfer.json").read_text())
    assert report["kind"] == "bundle" and report["skipped"] == [] and "head.weight" in report["loaded"]

    carrier = next(i for i, c in enumerate(json.loads((run_dir / "schema.json").read_text())["categorical"])
                   if c["name"] == "carrier")
    source_levels, tuned_levels = schema_levels(tables["pretrained"], "carrier"), schema_levels(run_dir, "carrier")
    assert source_levels != tuned_levels  # the two samples ordered their vocabularies differently
    for level in tuned_levels:
        assert torch.equal(tuned[f"embeddings.{carrier}.weight"][tuned_levels.index(level) + 1],
                           source[f"embeddings.{carrier}.weight"][source_levels.index(level) + 1]), level
    # What was not frozen trained on.
    assert not torch.equal(tuned["head.weight"], source["head.weight"])
    assert not torch.equal(tuned["mlp.0.weight"], source["mlp.0.weight"])


def test_init_from_a_safetensors_file_and_from_torch_save_state_dicts(tables, tmp_path) -> None:
    weights = bundle_weights(tables["pretrained"])
    save_file(weights, tmp_path / "weights.safetensors")
    torch.save({"epoch": 4, "model_state_dict": weights, "loss": 0.3}, tmp_path / "checkpoint.pth")
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "data_parallel.pt")
    for name in ("weights.safetensors", "checkpoint.pth", "data_parallel.pt"):
        run_dir = tmp_path / name.replace(".", "_")
        # The same table as the pretrained run: same vocabularies, so every tensor lines up by position.
        torchkeep.train(str(tables["pretrain"]), run_dir=str(run_dir), epochs=1, init_from=str(tmp_path / name),
                        freeze=["embeddings.*", "continuous_norm.*"], **SETTINGS)
        report = json.loads((run_dir / "transfer.json").read_text())
        assert report["kind"] == ("safetensors" if name.endswith("safetensors") else "pth")
        assert sorted(report["loaded"]) == sorted(weights) and report["new"] == []
        tuned = bundle_weights(run_dir)
        frozen = [k for k in weights if k.startswith(("embeddings.", "continuous_norm."))]
        assert "continuous_norm.running_mean" in frozen  # frozen BatchNorm: eval mode, statistics kept
        for key in frozen:
            assert torch.equal(tuned[key], weights[key]), (name, key)
        assert not torch.equal(tuned["mlp.0.weight"], weights["mlp.0.weight"])


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pth_that_holds_pickled_code_is_refused_and_nothing_is_loaded(tables, tmp_path) -> None:
    marker = tmp_path / "ran"
    payload = RunsCodeWhenUnpickled()
    payload.marker = str(marker)
    torch.save({"model_state_dict": bundle_weights(tables["pretrained"]), "hook": payload}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil.pth: refused: the pickle asks for .* which could run code"):
        torchkeep.train(str(tables["finetune"]), run_dir=str(tmp_path / "run"), epochs=1,
                        init_from=str(tmp_path / "evil.pth"), **SETTINGS)
    assert not marker.exists()
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_a_different_target_skips_the_head_and_moves_first_layer_columns_with_their_inputs(tables, tmp_path) -> None:
    run_dir = tmp_path / "carrier"
    stream = io.StringIO()
    torchkeep.train(str(tables["finetune"]), run_dir=str(run_dir), epochs=1, init_from=str(tables["pretrained"]),
                    progress=Progress(stream=stream, rich=False),
                    **{**SETTINGS, "target": "carrier", "quiet": False})
    report = json.loads((run_dir / "transfer.json").read_text())
    skipped = {name: (have, want) for name, have, want in report["skipped"]}
    assert skipped == {"head.weight": ([1, 16], [4, 16]), "head.bias": ([1], [4])}
    assert {"mlp.0.weight", "mlp.2.weight", "embeddings.0.weight"} <= set(report["loaded"])
    printed = stream.getvalue()
    assert "head.weight (1, 16) -> model (4, 16)" in printed
    assert f"loaded {len(report['loaded'])}, skipped 2" in printed and "first layer: input columns of" in printed

    # carrier became the target and late a feature: the inputs after them moved, and so did their
    # columns of the first layer. Load again into a fresh model of this run to look.
    schema = TableSchema.from_dict(json.loads((run_dir / "schema.json").read_text()))
    args = json.loads((run_dir / "model.json").read_text())["args"]
    model = build_model("entity_embedding_mlp", args)
    load_pretrained(model, str(tables["pretrained"]), adapt=level_aligner(schema))
    source = bundle_weights(tables["pretrained"])
    source_schema = TableSchema.from_dict(json.loads((tables["pretrained"] / "schema.json").read_text()))
    source_dims = [int(source[f"embeddings.{i}.weight"].shape[1]) for i in range(len(source_schema.categorical))]

    def dep_delay_input(table_schema: TableSchema, dims: list[int]) -> int:
        position = sum(dims)
        for column in table_schema.continuous:
            if column.name == "dep_delay":
                return position
            position += 1 + column.missing_indicator
        raise AssertionError("no dep_delay input")

    moved_to, moved_from = dep_delay_input(schema, args["embedding_dims"]), dep_delay_input(source_schema, source_dims)
    assert moved_to != moved_from
    assert torch.equal(model.mlp[0].weight[:, moved_to], source["mlp.0.weight"][:, moved_from])


def test_unfreeze_at_trains_frozen_weights_from_that_epoch_on(tables, tmp_path) -> None:
    run_dir = tmp_path / "gradual"
    torchkeep.train(str(tables["finetune"]), run_dir=str(run_dir), epochs=EPOCHS, init_from=str(tables["pretrained"]),
                    freeze=["mlp.*"], unfreeze_at=2, keep_last=100, every_steps=1, **SETTINGS)
    source = bundle_weights(tables["pretrained"])

    def at(step: int) -> dict[str, torch.Tensor]:
        return load_file(run_dir / "checkpoints" / f"step-{step:09d}" / "model.safetensors")

    for step in (1, BATCHES_PER_EPOCH):  # epoch 1: frozen
        assert torch.equal(at(step)["mlp.0.weight"], source["mlp.0.weight"])
        assert not torch.equal(at(step)["head.weight"], source["head.weight"])
    assert not torch.equal(at(BATCHES_PER_EPOCH + 1)["mlp.0.weight"], source["mlp.0.weight"])  # epoch 2: trains


@pytest.fixture(scope="module")
def gradual(tables) -> Path:
    """A run frozen in epoch 1 and unfrozen from epoch 2, a checkpoint after every step."""
    run_dir = tables["root"] / "gradual-full"
    torchkeep.train(str(tables["finetune"]), run_dir=str(run_dir), epochs=EPOCHS, init_from=str(tables["pretrained"]),
                    freeze=["embeddings.*", "mlp.0.*"], unfreeze_at=2, backbone_lr_mult=0.3, keep_last=1_000,
                    every_steps=1, **SETTINGS)
    return run_dir


# 4: mid epoch 1 (frozen); 9: the end of epoch 1, the checkpoint just before unfreezing; 13: mid epoch 2.
@pytest.mark.parametrize("step", [4, BATCHES_PER_EPOCH, 13])
def test_resume_across_the_unfreeze_boundary_is_bit_identical(gradual, tmp_path, step) -> None:
    copy = tmp_path / "crashed"
    shutil.copytree(gradual, copy)
    for directory in (copy / "checkpoints").glob("step-*"):
        if int(directory.name.removeprefix("step-")) > step:
            shutil.rmtree(directory)
    (copy / "checkpoints" / "LATEST").write_text(f"step-{step:09d}")
    shutil.rmtree(copy / "bundle")

    torchkeep.train(resume=str(copy), quiet=True)
    expected, got = bundle_weights(gradual), bundle_weights(copy)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    final = f"step-{EPOCHS * BATCHES_PER_EPOCH:09d}"
    optimizer = [load_file(run / "checkpoints" / final / "state.safetensors") for run in (gradual, copy)]
    assert [k for k in optimizer[0] if not torch.equal(optimizer[0][k], optimizer[1][k])] == []


def small_model() -> torch.nn.Module:
    return build_model("entity_embedding_mlp", {
        "cardinalities": [5, 7], "embedding_dims": [3, 4], "n_continuous": 2, "out_features": 1,
        "hidden_sizes": [8], "batch_norm": "continuous"})


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_backbone_lr_mult_scales_pretrained_groups_and_unfrozen_groups_follow_the_schedule(schedule) -> None:
    """Every group's lr is base x mult at every step, also for groups added when unfreezing."""
    model = small_model()
    pretrained = [name for name, _ in model.named_parameters() if not name.startswith("head.")]
    config = OptimConfig(lr=0.02, schedule=schedule)
    plan = TransferPlan(model, TransferConfig(freeze=["embeddings.*"], unfreeze_at=2, backbone_lr_mult=0.1),
                        pretrained=pretrained)
    plan.apply()
    optimizer = build_optimizer(config, plan.param_groups(config.lr))
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("new", 0.02), ("pretrained", 0.02 * 0.1)]
    scheduler = build_scheduler(config, optimizer, total_steps=20)
    if schedule == "onecycle":  # one peak per group
        assert [g["max_lr"] for g in optimizer.param_groups] == [0.02, 0.02 * 0.1]
    # A reference with no freezing: one plain group whose lr is the base at every step.
    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    reference_scheduler = build_scheduler(config, reference, total_steps=20)

    assert all(not p.requires_grad for p in model.embeddings.parameters())
    for step in range(20):
        if step == 7:
            assert plan.maybe_unfreeze(1, optimizer, scheduler) == ["embeddings.0.weight", "embeddings.1.weight"]
            assert all(p.requires_grad for p in model.parameters())
        base = reference.param_groups[0]["lr"]
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(base * group["lr_mult"], rel=1e-9), (step, group["name"])
        optimizer.step()
        reference.step()
        if scheduler is not None:
            scheduler.step()
            reference_scheduler.step()
    assert [g["name"] for g in optimizer.param_groups] == ["new", "pretrained", "pretrained (unfrozen)"]


def test_frozen_batchnorm_stays_in_eval_mode_until_unfrozen() -> None:
    model = small_model()
    plan = TransferPlan(model, TransferConfig(freeze=["continuous_norm.*"], unfreeze_at=2))
    plan.apply()
    model.train()
    plan.hold_frozen_norms()
    assert not model.continuous_norm.training and model.mlp.training
    optimizer = torch.optim.AdamW(plan.param_groups(0.01))
    plan.maybe_unfreeze(1, optimizer, None)
    assert model.continuous_norm.training


def test_nothing_in_common_is_an_error_that_names_both_sides_and_a_rename_map_fixes_it(tmp_path) -> None:
    save_file({"features.0.weight": torch.ones(8, 9)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match=r"no weight matches the model by name and shape .*features.0.weight"):
        load_pretrained(small_model(), str(tmp_path / "other.safetensors"))
    model = small_model()
    report = load_pretrained(model, str(tmp_path / "other.safetensors"), rename={"features.0.": "mlp.0."})
    assert report.loaded == ["mlp.0.weight"] and report.pretrained_parameters == ["mlp.0.weight"]
    assert torch.equal(model.mlp[0].weight, torch.ones(8, 9)) and "head.weight" in report.new


def test_init_from_s3_a_run_directory_and_a_pth(tables, s3, tmp_path) -> None:
    bucket = s3.new_bucket()
    client = s3.client()
    for path in tables["pretrained"].rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"runs/pretrained/{path.relative_to(tables['pretrained'])}")
    weights = bundle_weights(tables["pretrained"])
    torch.save({"state_dict": weights}, tmp_path / "weights.pth")
    client.upload_file(str(tmp_path / "weights.pth"), bucket, "files/weights.pth")

    for source, kind in ((f"s3://{bucket}/runs/pretrained", "bundle"), (f"s3://{bucket}/files/weights.pth", "pth")):
        model = build_model("entity_embedding_mlp",
                            json.loads((tables["pretrained"] / "model.json").read_text())["args"])
        report = load_pretrained(model, source)
        assert (report.kind, report.source, sorted(report.loaded)) == (kind, source, sorted(weights))
        assert all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)


def test_a_run_without_a_bundle_gives_its_newest_valid_checkpoint(tables, tmp_path) -> None:
    copy = tmp_path / "unfinished"
    shutil.copytree(tables["pretrained"], copy)
    shutil.rmtree(copy / "bundle")
    checkpoints = sorted((copy / "checkpoints").glob("step-*"))
    newest = checkpoints[-1]
    (newest / "model.safetensors").write_bytes(b"truncated")  # fails its manifest: skipped
    model = build_model("entity_embedding_mlp", json.loads((copy / "model.json").read_text())["args"])
    report = load_pretrained(model, str(copy))
    assert report.kind == f"checkpoint {checkpoints[-2].name}"
    expected = load_file(checkpoints[-2] / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


def test_backbone_lr_mult_without_pretrained_weights_warns(caplog) -> None:
    with caplog.at_level("WARNING", logger="torchkeep"):
        TransferPlan(small_model(), TransferConfig(backbone_lr_mult=0.1))
    assert "backbone_lr_mult 0.1 changes nothing: no parameter was loaded" in caplog.text


def test_an_ensemble_moves_its_first_layer_inputs_and_member_scalings_too(tables, tmp_path) -> None:
    ensemble = {**SETTINGS, "ensemble_size": 4}
    source_dir, run_dir = tmp_path / "source", tmp_path / "carrier"
    torchkeep.train(str(tables["pretrain"]), run_dir=str(source_dir), epochs=1, **ensemble)
    torchkeep.train(str(tables["finetune"]), run_dir=str(run_dir), epochs=1, init_from=str(source_dir),
                    **{**ensemble, "target": "carrier"})
    report = json.loads((run_dir / "transfer.json").read_text())
    assert {"mlp.layers.0.weight", "mlp.layers.0.r", "mlp.layers.1.weight"} <= set(report["loaded"])
    schema = TableSchema.from_dict(json.loads((run_dir / "schema.json").read_text()))
    args = json.loads((run_dir / "model.json").read_text())["args"]
    model = build_model("entity_embedding_mlp", args)
    load_pretrained(model, str(source_dir), adapt=level_aligner(schema))
    source = bundle_weights(source_dir)
    source_schema = TableSchema.from_dict(json.loads((source_dir / "schema.json").read_text()))
    source_dims = [int(source[f"embeddings.{i}.weight"].shape[1]) for i in range(len(source_schema.categorical))]

    def dep_delay_input(table_schema: TableSchema, dims: list[int]) -> int:
        names = [c.name for c in table_schema.continuous]
        before = table_schema.continuous[:names.index("dep_delay")]
        return sum(dims) + sum(1 + c.missing_indicator for c in before)

    moved_to = dep_delay_input(schema, args["embedding_dims"])
    moved_from = dep_delay_input(source_schema, source_dims)
    assert moved_to != moved_from
    assert torch.equal(model.mlp.layers[0].weight[moved_to], source["mlp.layers.0.weight"][moved_from])
    assert torch.equal(model.mlp.layers[0].r[:, moved_to], source["mlp.layers.0.r"][:, moved_from])
