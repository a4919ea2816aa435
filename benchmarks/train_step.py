"""Full fine-tune train-step throughput of ResNet50 on pre-decoded batches; prints one JSON line.

`--mode baseline`: fp32, contiguous, eager (run it under the default allocator).
`--mode ours`: the trainer's defaults here, bf16 autocast where native + channels_last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchvision
from torch import nn

from dogbreed.train.runtime import Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["baseline", "ours"], required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    runtime = Runtime.from_names("auto", "auto" if args.mode == "ours" else "fp32", args.mode == "ours")

    model = torchvision.models.resnet50(num_classes=133).to(runtime.device, memory_format=runtime.memory_format)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    images = runtime.to_device(torch.randn(args.batch_size, 3, 224, 224))
    targets = torch.randint(0, 133, (args.batch_size,), device=runtime.device)

    times = []
    for step in range(args.steps + 1):  # the first step warms up allocator and kernels
        started = time.perf_counter()
        with runtime.autocast():
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - started)
    print(json.dumps({"mode": args.mode, "precision": runtime.precision,
                      "images_per_s": args.batch_size / statistics.median(times)}))  # fmt: skip


if __name__ == "__main__":
    main()
