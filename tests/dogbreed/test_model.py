"""The network: heads, freeze policies, frozen BatchNorm, and rebuilding from weights alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dogbreed.errors import WeightsError
from dogbreed.serving.architecture import ModelSpec, build_model, imagenet_state_dict, spec_from_state_dict
from dogbreed.train.network import apply_freeze, load_backbone, train_mode


@pytest.mark.parametrize(
    ("policy", "trainable_prefixes"),
    [("backbone", {"fc"}), ("layer4", {"layer4", "fc"}), ("none", {"conv1", "bn1", "layer1", "layer4", "fc"})],
)
def test_freeze_policy_decides_what_trains(policy: str, trainable_prefixes: set[str]) -> None:
    model = build_model(ModelSpec("resnet18", 5))
    apply_freeze(model, policy)
    trains = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable_prefixes <= trains
    if policy != "none":
        assert trains == trainable_prefixes


def test_frozen_batchnorm_statistics_do_not_move_in_training() -> None:
    model = build_model(ModelSpec("resnet18", 5))
    apply_freeze(model, "layer4")
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    train_mode(model)
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    after = model.state_dict()
    frozen_changed = [k for k in before if not k.startswith("layer4") and not torch.equal(before[k], after[k])]
    trained_changed = [k for k in before if k.startswith("layer4") and not torch.equal(before[k], after[k])]
    assert frozen_changed == []
    assert trained_changed  # the stage that trains does update its statistics
    assert model.fc.training and not model.bn1.training


def test_mlp_head_is_the_course_head() -> None:
    model = build_model(ModelSpec("resnet50", 133, head="mlp"))
    assert [tuple(p.shape) for p in model.fc.parameters()] == [(128, 2048), (128,), (133, 128), (133,)]


@pytest.mark.parametrize(
    "spec", [ModelSpec("resnet18", 7), ModelSpec("resnet50", 133, "mlp", 128), ModelSpec("resnet34", 3, "mlp", 64)]
)
def test_spec_is_recovered_from_the_state_dict(spec: ModelSpec) -> None:
    assert spec_from_state_dict(build_model(spec).state_dict()) == spec


def test_unknown_weights_are_a_clear_error() -> None:
    with pytest.raises(WeightsError, match="not a supported ResNet"):
        spec_from_state_dict({"features.0.weight": torch.zeros(1)})


def test_missing_imagenet_weights_say_where_to_put_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, closed_port: int
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # Every HTTPS request goes to a closed loopback port: offline, on any machine.
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(WeightsError) as raised:
        imagenet_state_dict("resnet50")
    message = str(raised.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    assert "model.pretrained=false" in message


def test_backbone_starts_from_an_earlier_run_with_a_new_head(tmp_path: Path) -> None:
    earlier = build_model(ModelSpec("resnet18", 4))
    torch.save(earlier.state_dict(), tmp_path / "model.pth")
    model = build_model(ModelSpec("resnet18", 7, head="mlp"))
    load_backbone(model, tmp_path / "model.pth")
    assert torch.equal(model.layer4[1].conv2.weight, earlier.layer4[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, earlier.bn1.running_var)
    assert model.fc[2].out_features == 7


def test_backbone_weights_of_another_arch_are_refused(tmp_path: Path) -> None:
    torch.save(build_model(ModelSpec("resnet18", 4)).state_dict(), tmp_path / "model.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        load_backbone(build_model(ModelSpec("resnet34", 4)), tmp_path / "model.pth")
