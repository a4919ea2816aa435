"""Device-side JPEG decoding: the PIL path's pictures (EXIF orientation too), PNG and CMYK fallbacks, full runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dogbreed.data.gpu_decode import DeviceBatchTransform, EncodedImages, collate_encoded
from dogbreed.serving.preprocess import EvalPreset, decode_image
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.images import write_image


def encoded_batch(paths: list[Path]) -> list[torch.Tensor]:
    return collate_encoded([EncodedImages([(p, 0)])[0] for p in paths])[0]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_device_decode_matches_the_cpu_eval_preset(tiny_dataset: Path, tmp_path: Path, device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    paths = sorted((tiny_dataset / "test").glob("*/*.jpg"))[:4]
    paths += [write_image(tmp_path / "rgba.png", mode="RGBA", fmt="PNG")]  # not a JPEG: CPU fallback
    paths += [write_image(tmp_path / "cmyk.jpg", mode="CMYK", size=(64, 48), fmt="JPEG")]
    batch = DeviceBatchTransform(32, train=False, device=torch.device(device))(encoded_batch(paths))
    assert batch.shape == (6, 3, 32, 32) and batch.device.type == device
    assert batch.is_contiguous(memory_format=torch.channels_last)
    reference = torch.stack([EvalPreset(32)(decode_image(p)) for p in paths[:4]])
    # JPEG decoders and resize kernels differ slightly; the pictures are the same.
    assert (batch[:4].cpu() - reference).abs().mean() < 0.05


def test_training_with_device_decoding_runs_end_to_end(make_cfg) -> None:
    cfg = make_cfg(["data.decode_on_device=true", "model.freeze=none", "trainer.epochs=2"])
    train(run_settings(cfg))
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["test"]["images"] == 16


def test_device_decode_turns_phone_photos_upright_like_the_shared_decode(tmp_path: Path) -> None:
    # Stored landscape with EXIF orientation 6 (rotate 90° clockwise): left half red becomes the top half.
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(pixels).save(path, "JPEG", exif=exif, quality=95)
    decoded = DeviceBatchTransform(32, train=False, device=torch.device("cpu")).decode(encoded_batch([path]))[0]
    assert decoded.shape == (3, 64, 32)
    assert decoded[0, 5, 16] > 200 > decoded[0, 58, 16]
    assert tuple(decode_image(path).size) == (32, 64)  # the shared decode agrees
