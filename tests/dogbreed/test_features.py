"""The feature cache: reused when nothing changed, rebuilt when anything did, exact weights out."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from dogbreed.data import scan
from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.folders import discover_classes
from dogbreed.data.scan import scan_split
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.serving.preprocess import EvalPreset
from dogbreed.train import features, settings
from dogbreed.train.engine import evaluate
from dogbreed.train.features import FeatureViews, backbone_of
from dogbreed.train.loaders import make_feature_loaders, scan_dataset, start_epoch
from dogbreed.train.run import train
from dogbreed.train.runtime import Runtime
from dogbreed.train.settings import run_settings

CACHED = ["model.freeze=backbone", "trainer.feature_cache=auto", "trainer.precision=fp32"]


def cache_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    """'hit <split>' / 'extracted <split>' for each split, in order."""
    events = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("feature cache hit: "):
            events.append("hit " + message.split(": ")[1].split("-")[0])
        elif message.startswith("extracted "):
            events.append("extracted " + message.split()[1])
    caplog.clear()
    return events


def test_second_run_reuses_the_cache_and_changed_files_invalidate_it(
    make_cfg, caplog: pytest.LogCaptureFixture, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    caplog.set_level(logging.INFO, logger="dogbreed")
    train(run_settings(make_cfg(CACHED, data_root=root, run="first")))
    assert cache_events(caplog) == ["extracted train", "extracted valid", "extracted test"]

    train(run_settings(make_cfg([*CACHED, "optim.lr=0.01", "trainer.epochs=2"], data_root=root, run="second")))
    assert cache_events(caplog) == ["hit train", "hit valid", "hit test"]

    (root / "valid" / "001.Ellipse_0deg" / "img_00000.jpg").touch()  # same bytes, newer mtime
    train(run_settings(make_cfg(CACHED, data_root=root, run="third")))
    assert cache_events(caplog) == ["hit train", "extracted valid", "hit test"]


def test_changed_backbone_weights_invalidate_the_cache(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dogbreed")
    train(run_settings(make_cfg(CACHED, run="first")))
    cache_events(caplog)
    train(run_settings(make_cfg([*CACHED, "trainer.seed=7"], run="second")))  # other random init
    assert cache_events(caplog) == ["extracted train", "extracted valid", "extracted test"]


def test_corrupt_cache_file_is_rebuilt(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dogbreed")
    cfg = make_cfg(CACHED, run="first")
    train(run_settings(cfg))
    cache_events(caplog)
    cache_files = sorted((Path(cfg.paths.cache_dir) / "features").glob("valid-*.pt"))
    assert len(cache_files) == 1
    cache_files[0].write_bytes(b"not a tensor file")
    train(run_settings(make_cfg(CACHED, run="second")))
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert cache_events(caplog) == ["hit train", "extracted valid", "hit test"]
    assert torch.load(cache_files[0], weights_only=True)["features"].shape[1] == 16  # rebuilt in place


def test_cached_run_weights_give_the_same_predictions_in_a_plain_model(make_cfg, tiny_dataset: Path) -> None:
    cfg = make_cfg([*CACHED, "trainer.epochs=3", "optim.lr=0.01"])
    train(run_settings(cfg))
    run = Path(cfg.paths.output_dir)
    metrics = json.loads((run / "metrics.json").read_text())

    model = build_model(ModelSpec("resnet18", 4))
    state = torch.load(run / "model.pth", weights_only=True)
    assert state.keys() == model.state_dict().keys()  # a complete model, not just the head
    model.load_state_dict(state)
    samples = scan_split(tiny_dataset, "test", sorted(p.name for p in (tiny_dataset / "test").iterdir())).samples
    loader = DataLoader(ImageFolderDataset(samples, EvalPreset(32), 37), batch_size=5)
    plain = evaluate(model, loader, nn.CrossEntropyLoss(), Runtime.from_names("cpu", "fp32"), 4, "test")

    assert plain.top1 == pytest.approx(metrics["test"]["top1"])
    per_class = dict(zip(metrics["test"]["per_class_accuracy"], plain.confusion.per_class_accuracy(), strict=True))
    assert per_class == pytest.approx(metrics["test"]["per_class_accuracy"])
    assert plain.loss == pytest.approx(metrics["test"]["loss"], rel=1e-4)


def test_frozen_backbone_is_untouched_by_a_cached_run(make_cfg) -> None:
    cfg = make_cfg([*CACHED, "trainer.epochs=2", "optim.lr=0.05"])
    torch.manual_seed(cfg.trainer.seed)
    initial = build_model(ModelSpec("resnet18", 4)).state_dict()
    train(run_settings(cfg))
    trained = torch.load(Path(cfg.paths.output_dir) / "model.pth", weights_only=True)
    backbone_keys = [k for k in initial if not k.startswith("fc.")]
    assert all(torch.equal(initial[k], trained[k]) for k in backbone_keys)
    assert not torch.equal(initial["fc.weight"], trained["fc.weight"])


def test_a_new_dataset_compiles_the_extractor_while_its_images_are_checked(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    inputs: list[tuple] = []

    def recording_compile(module: nn.Module):  # stands in for torch.compile, which guards on these
        events.append("compile")

        def forward(images: torch.Tensor) -> torch.Tensor:
            events.append("forward")
            inputs.append((images.shape, images.dtype, images.stride(), torch.is_inference(images)))
            return module(images)

        return forward

    real_check = scan.check_image
    monkeypatch.setattr(features, "compiled", recording_compile)
    monkeypatch.setattr(scan, "check_image", lambda path: events.append("check") or real_check(path))
    train(run_settings(make_cfg([*CACHED, "trainer.compile=true"])))

    assert events.count("compile") == 1  # once, for every split
    assert events.index("forward") < events.index("check")  # first compiled, on zeros, before any check
    assert len(set(inputs)) == 1  # its batch of zeros looked like every real batch: no second compile
    events.clear()
    train(run_settings(make_cfg([*CACHED, "trainer.compile=true"], run="second")))
    assert events == []  # features and verdicts cached: nothing compiled, nothing checked


def test_views_store_augmented_copies_that_epochs_cycle_through(make_cfg) -> None:
    cfg = make_cfg([*CACHED, "trainer.feature_cache_views=3"])
    model = build_model(ModelSpec("resnet18", 4))
    root = Path(cfg.data.root)
    splits = scan_dataset(root, discover_classes(root), 0)
    loaders = make_feature_loaders(
        settings.loader_settings(cfg),
        settings.feature_cache_settings(cfg),
        model,
        splits,
        Runtime.from_names("cpu", "fp32"),
    )
    train_views = loaders["train"].dataset
    assert isinstance(train_views, FeatureViews)
    assert train_views.features.shape == (3, len(splits["train"].samples), 512)
    assert loaders["valid"].dataset.features.shape[0] == 1
    assert not torch.equal(train_views.features[0], train_views.features[1])
    assert not torch.equal(train_views.features[1], train_views.features[2])
    # View 0 is the clean centre crop: what the backbone gives for the eval transform.
    path, _ = splits["train"].samples[0]
    with torch.inference_mode():
        clean = backbone_of(model).eval()(ImageFolderDataset([(path, 0)], EvalPreset(32), 37)[0][0][None])
    assert torch.allclose(train_views.features[0, 0], clean[0], atol=1e-4)
    seen = []
    for epoch in (1, 2, 3, 4):
        start_epoch(loaders["train"], cfg.trainer.seed, epoch)
        seen.append(train_views.view)
    assert seen == [0, 1, 2, 0]


def test_feature_cache_refuses_a_training_backbone(make_cfg) -> None:
    with pytest.raises(ValueError, match=r"needs model\.freeze=backbone"):
        train(run_settings(make_cfg(["model.freeze=layer4", "trainer.feature_cache=true"])))
