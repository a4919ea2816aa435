"""The course recipe, literally, as the baseline the benchmarks compare against.

Frozen ResNet50 recomputed on every image of every epoch, fp32, batch 32, eager,
contiguous memory format, full-size PIL decode, torchvision ImageFolder. Two
course bugs are fixed so accuracies are comparable (it trained on the test split
and never normalised; frozen BatchNorm is kept in eval mode as ours does). Run
it under the default allocator to reproduce the course's conditions. Prints one
JSON line. Not part of the library: it exists to be measured.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

NORMALIZE = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", help="dogImages-shaped folder")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit-train", type=int, default=0, help="use the first N training images (0 = all)")
    parser.add_argument("--limit-valid", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--weights", help="backbone weights (a run's model.pth) instead of random init")
    args = parser.parse_args()
    torch.manual_seed(0)

    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), NORMALIZE]
    )
    eval_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), NORMALIZE])
    train_set = datasets.ImageFolder(f"{args.data}/train", train_tf)
    valid_set = datasets.ImageFolder(f"{args.data}/valid", eval_tf)
    if args.limit_train:
        train_set = Subset(train_set, torch.randperm(len(train_set))[: args.limit_train].tolist())
    if args.limit_valid:
        valid_set = Subset(valid_set, list(range(min(args.limit_valid, len(valid_set)))))
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True, num_workers=args.workers)
    valid_loader = DataLoader(valid_set, batch_size=32, num_workers=args.workers)

    classes = len(datasets.ImageFolder(f"{args.data}/train").classes)
    model = torchvision.models.get_model(args.arch, weights=None)  # ImageNet weights are the same compute
    if args.weights:
        state = torch.load(args.weights, weights_only=True)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, 128), nn.ReLU(), nn.Linear(128, classes))
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-4)
    criterion = nn.CrossEntropyLoss()

    train_seconds = valid_seconds = 0.0
    train_images = valid_images = 0
    accuracy = 0.0
    for _ in range(args.epochs):
        model.eval()
        model.fc.train()
        start = time.perf_counter()
        for images, targets in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), targets)
            loss.backward()
            optimizer.step()
            train_images += targets.shape[0]
        train_seconds += time.perf_counter() - start

        model.eval()
        start = time.perf_counter()
        correct = seen = 0
        with torch.no_grad():
            for images, targets in valid_loader:
                correct += (model(images).argmax(1) == targets).sum().item()
                seen += targets.shape[0]
        valid_seconds += time.perf_counter() - start
        valid_images += seen
        accuracy = correct / seen
    print(
        json.dumps(
            {
                "train_images_per_s": train_images / train_seconds,
                "valid_images_per_s": valid_images / valid_seconds,
                "train_seconds": train_seconds,
                "valid_seconds": valid_seconds,
                "valid_top1": accuracy,
                "epochs": args.epochs,
                "train_images_per_epoch": train_images // args.epochs,
            }
        )
    )


if __name__ == "__main__":
    main()
