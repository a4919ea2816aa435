"""The real Hydra config, shrunk so a training run takes seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dogbreed.data.synthetic import SyntheticSpec

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"

TINY_SPEC = SyntheticSpec(classes=4, train_per_class=12, valid_per_class=4, test_per_class=4, width=64, height=48)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def shrunk_overrides(output_dir: Path, data_root: Path) -> list[str]:
    """CPU, no workers, tiny images and model: a run takes seconds. Later overrides win."""
    return [
        f"paths.output_dir={output_dir}",
        f"paths.output_root={output_dir.parent}",
        f"paths.cache_dir={output_dir.parent.parent / 'cache'}",
        f"data.root={data_root}",
        "data.synthetic=null",
        "data.num_workers=0",
        "data.scan_workers=0",
        "data.image_size=32",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "model.arch=resnet18",
        "model.pretrained=false",
        "trainer.device=cpu",
        "trainer.epochs=1",
        "trainer.progress_bar=false",
    ]
