"""Ours vs the course recipe on the same generated dogImages-sized data, in one run.

(a) head-only training, 10 epochs, wall time: ours (`experiment=udacity_baseline`: feature
    cache, bf16, compiled extraction, tuned malloc; no features or scan records cached,
    inductor's kernels cached by a first run on an empty compile cache, timed and printed
    too) against the model's raw forward on all its images (timed just before and just after
    ours) and against the literal course loop (benchmarks/course_baseline.py: fp32, batch 32,
    default malloc, full decode, frozen backbone recomputed every epoch). The baseline is
    timed on one epoch over a sample of the training images and projected to the full set
    and ten epochs; the output says so. Validation accuracy of both is compared on a smaller
    set where both run every epoch.
(c) full fine-tune train step, images/s: fp32 + default malloc vs our defaults.
(d) peak RSS of our head-only run.
Usage: python -m benchmarks.training_speed [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import REPO, dataset, goal, ratio, run
from dogbreed.data.synthetic import SyntheticSpec, generate

ACCURACY_SET = SyntheticSpec(classes=20, train_per_class=20, valid_per_class=5, test_per_class=5, width=500,
                             height=375, seed=1)  # fmt: skip
# The same 20 classes, other images: a ResNet18 trained on these stands in for ImageNet weights
# (not downloadable here), so the heads of both recipes have features worth learning from.
BACKBONE_SET = SyntheticSpec(classes=20, train_per_class=30, valid_per_class=5, test_per_class=5, width=500,
                             height=375, seed=2)  # fmt: skip


def ours_head_only(data: Path, epochs: int, work: Path, *extra: str, compiled_in: Path | None = None,
                   run_name: str = "") -> tuple[float, float, dict]:  # fmt: skip
    """Wall seconds, peak RSS (MB) and metrics.json of a fresh head-only run: no cached features or scan records.

    `compiled_in` is inductor's cache directory for the run (TORCHINDUCTOR_CACHE_DIR): empty, the
    run compiles from scratch; kept from an earlier run, it is a new dataset on a machine that has
    trained before. None leaves torch's default.
    """
    run_dir = work / f"run-{data.name}{run_name}"
    shutil.rmtree(work / "cache", ignore_errors=True)
    measured = run(
        [
            "train.py", "experiment=udacity_baseline", "model.pretrained=false", f"data.root={data}",
            f"trainer.epochs={epochs}", "trainer.early_stopping_patience=null", "trainer.progress_bar=false",
            f"paths.cache_dir={work / 'cache'}", f"hydra.run.dir={run_dir}", *extra,
        ],
        tuned_malloc=True,
        extra_env={"TORCHINDUCTOR_CACHE_DIR": str(compiled_in)} if compiled_in else None,
    )  # fmt: skip
    return measured.seconds, measured.peak_rss_mb, json.loads((run_dir / "metrics.json").read_text())


def raw_forward(quick: bool) -> dict:
    """The extraction benchmark's raw forward: the same precision, batch and compiled module as the
    run's extraction, on a ready-made batch ({"raw_images_per_s", "batch"})."""
    return run(["-m", "benchmarks.extraction", "--raw-only"] + (["--quick"] if quick else []),
               tuned_malloc=True).last_json()  # fmt: skip


def course(data: Path, epochs: int, limit_train: int = 0, limit_valid: int = 0, *extra: str) -> dict:
    args = ["benchmarks/course_baseline.py", str(data), "--epochs", str(epochs)]
    args += ["--limit-train", str(limit_train), "--limit-valid", str(limit_valid), *extra]
    return run(args, tuned_malloc=False).last_json()


def domain_backbone(data_dir: Path, work: Path, quick: bool) -> Path:
    """A ResNet18 trained from scratch on BACKBONE_SET; returns its model.pth."""
    data = generate(data_dir / "backbone", BACKBONE_SET)
    run_dir = work / "backbone-run"
    run(
        [
            "train.py", f"data.root={data}", "model.arch=resnet18", "model.pretrained=false", "model.freeze=none",
            "optim=adamw", "optim.lr=2e-3", "data.image_size=128", f"trainer.epochs={1 if quick else 8}",
            "trainer.progress_bar=false", f"hydra.run.dir={run_dir}",
        ],
        tuned_malloc=True,
    )  # fmt: skip
    return run_dir / "model.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data, for a smoke test of the benchmark itself")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--baseline-sample", type=int, default=640, help="training images the baseline is timed on")
    parser.add_argument("--accuracy-epochs", type=int, default=5)
    args = parser.parse_args()
    epochs = 2 if args.quick else 10
    sample = 64 if args.quick else args.baseline_sample
    data = dataset(args.data_dir / ("quick" if args.quick else "dogimages-sized"), args.quick)
    train_images = sum(1 for _ in (data / "train").glob("*/*.jpg"))
    valid_images = sum(1 for _ in (data / "valid").glob("*/*.jpg"))
    all_images = sum(1 for _ in data.glob("*/*/*.jpg"))

    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as tmp:
        work = Path(tmp)
        print(f"## (a) head-only, {epochs} epochs, {train_images} train / {valid_images} valid images", flush=True)
        first_s, _, _ = ours_head_only(data, epochs, work, compiled_in=work / "inductor", run_name="-first")
        # The model's own speed just before and just after the measured run: on a shared machine
        # it drifts by a third within minutes, so a timing taken minutes away would count as ours.
        raw_before = raw_forward(args.quick)
        ours_s, ours_rss, ours_metrics = ours_head_only(data, epochs, work, compiled_in=work / "inductor")
        raw_after = raw_forward(args.quick)
        base = course(data, 1, sample, min(valid_images, sample // 4))
        per_epoch = train_images / base["train_images_per_s"] + valid_images / base["valid_images_per_s"]
        projected = epochs * per_epoch
        print(f"course baseline: {base['train_images_per_s']:.1f} img/s train, {base['valid_images_per_s']:.1f} "
              f"img/s valid, timed on 1 epoch of {sample} train images, projected to {epochs} epochs: "
              f"{projected:.0f} s")  # fmt: skip
        print(f"ours: {ours_s:.0f} s wall for the whole run (scan, extraction, compile, {epochs} epochs, reports), "
              f"inductor's kernels cached by an earlier run; {first_s:.0f} s for the first run on an empty cache, "
              f"{first_s / ours_s:.2f}x")  # fmt: skip
        print(f"head-only speed-up: {ratio(projected, ours_s)}", flush=True)
        # The model's own time for every image the run extracts (train, valid, test): the mean of
        # its speeds around the run.
        raw_ips = (raw_before["raw_images_per_s"] + raw_after["raw_images_per_s"]) / 2
        forward_s = all_images / raw_ips
        print(f"raw forward: {raw_ips:.1f} img/s at batch {raw_before['batch']} (mean of "
              f"{raw_before['raw_images_per_s']:.1f} just before the run and {raw_after['raw_images_per_s']:.1f} just "
              f"after), so the {all_images} images of the run are {forward_s:.0f} s of forward")  # fmt: skip
        print(goal("head-only whole run / the forward time of its images", ours_s / forward_s, 1.5, "<="))
        print(goal("head-only speed-up over the course recipe", projected / ours_s, 30, ">=", "{:.1f}x"), flush=True)

        accuracy_data = generate(args.data_dir / ("accuracy-quick" if args.quick else "accuracy"), ACCURACY_SET)
        accuracy_epochs = 1 if args.quick else args.accuracy_epochs
        backbone = domain_backbone(args.data_dir, work, args.quick)
        _, _, acc_metrics = ours_head_only(accuracy_data, accuracy_epochs, work, "model.arch=resnet18",
                                           f"model.init_weights={backbone}")  # fmt: skip
        acc_base = course(accuracy_data, accuracy_epochs, 0, 0, "--arch", "resnet18", "--weights", str(backbone))
        print(f"validation top-1 after {accuracy_epochs} epochs on the same {ACCURACY_SET.classes}-class set, "
              f"frozen ResNet18 backbone trained on other images of these classes: "
              f"ours {acc_metrics['valid']['top1']:.3f} vs course {acc_base['valid_top1']:.3f}",
              flush=True)  # fmt: skip

        print("## (c) full fine-tune train step, ResNet50 batch 32 at 224, pre-decoded batches", flush=True)
        steps = ["--steps", "2" if args.quick else "4"]
        base_step = run(["-m", "benchmarks.train_step", "--mode", "baseline", *steps], tuned_malloc=False).last_json()
        ours_step = run(["-m", "benchmarks.train_step", "--mode", "ours", *steps], tuned_malloc=True).last_json()
        print(f"fp32 + default malloc: {base_step['images_per_s']:.1f} img/s; ours ({ours_step['precision']}, "
              f"channels_last, tuned malloc): {ours_step['images_per_s']:.1f} img/s; "
              f"ratio {ratio(ours_step['images_per_s'], base_step['images_per_s'])}")  # fmt: skip

        print("## (d) peak RSS", flush=True)
        print(f"ours, head-only run on the dogImages-sized set: {ours_rss / 1024:.2f} GB "
              f"(largest single process; valid top-1 {ours_metrics['valid']['top1']:.3f})")  # fmt: skip
        print(goal("peak RSS of the head-only run, GB", ours_rss / 1024, 3.0, "<=", "{:.2f}"))


if __name__ == "__main__":
    main()
